#!/usr/bin/env python3
# -*- coding: utf-8 -*-

#
# SPDX-License-Identifier: GPL-3.0
#
# GNU Radio Python Flow Graph
# Title: semcom OTA TX (HackRF)
# Author: gr-semcom
# Description: semantic_tx -> packet_tx -> bursts_to_stream -> amplitude -> osmosdr sink (hackrf=0); Ctrl-C to stop
# GNU Radio version: 3.10.5.1

from gnuradio import blocks
import pmt
from gnuradio import gr
from gnuradio.filter import firdes
from gnuradio.fft import window
import sys
import signal
from argparse import ArgumentParser
from gnuradio.eng_arg import eng_float, intx
from gnuradio import eng_notation
from semcom.radio import packet
from semcom.radio import stream
import osmosdr
import time
import pmt, semcom.paths
import semcom.radio.semantic_tx




class ota_tx_hackrf(gr.top_block):

    def __init__(self, amplitude=0.5, config='', device_args='hackrf=0', fec='cc', freq=433.92e6, if_gain=20, image='', modulation='qpsk', repeat_s=5, rf_gain=0, samp_rate=2e6, sps=2):
        gr.top_block.__init__(self, "semcom OTA TX (HackRF)", catch_exceptions=True)

        ##################################################
        # Parameters
        ##################################################
        self.amplitude = amplitude
        self.config = config
        self.device_args = device_args
        self.fec = fec
        self.freq = freq
        self.if_gain = if_gain
        self.image = image
        self.modulation = modulation
        self.repeat_s = repeat_s
        self.rf_gain = rf_gain
        self.samp_rate = samp_rate
        self.sps = sps

        ##################################################
        # Variables
        ##################################################
        self.image_file = image_file = image or str(semcom.paths.data_path('photos', 'chelsea.png'))

        ##################################################
        # Blocks
        ##################################################

        self.semcom_semantic_tx_0 = semcom.radio.semantic_tx.semantic_tx(image_path=image_file, config=config, key_mask_path='', first_image_id=0, endpoint='', worker_timeout_s=30.0, protected_mcs="", key_mcs="", adapt=False, budget_symbols=0, cbr=0.0, plan_snr_db=None, hybrid=False)
        self.semcom_packet_tx_0 = packet.packet_tx(modulation=modulation, fec_code=fec, samples_per_symbol=sps, excess_bw=0.35, mtu_bytes=1500)
        self.semcom_bursts_to_stream_0 = stream.bursts_to_stream(wait_for_first_burst=False)
        self.osmosdr_sink_0 = osmosdr.sink(
            args="numchan=" + str(1) + " " + device_args
        )
        self.osmosdr_sink_0.set_time_unknown_pps(osmosdr.time_spec_t())
        self.osmosdr_sink_0.set_sample_rate(samp_rate)
        self.osmosdr_sink_0.set_center_freq(freq, 0)
        self.osmosdr_sink_0.set_freq_corr(0, 0)
        self.osmosdr_sink_0.set_gain(rf_gain, 0)
        self.osmosdr_sink_0.set_if_gain(if_gain, 0)
        self.osmosdr_sink_0.set_bb_gain(20, 0)
        self.osmosdr_sink_0.set_antenna("", 0)
        self.osmosdr_sink_0.set_bandwidth(0, 0)
        self.blocks_multiply_const_vxx_0 = blocks.multiply_const_cc(amplitude)
        self.blocks_message_strobe_0 = blocks.message_strobe(pmt.intern(image_file), (int(repeat_s * 1000)))
        self.blocks_message_debug_0 = blocks.message_debug(True)


        ##################################################
        # Connections
        ##################################################
        self.msg_connect((self.blocks_message_strobe_0, 'strobe'), (self.semcom_semantic_tx_0, 'in'))
        self.msg_connect((self.semcom_semantic_tx_0, 'info'), (self.blocks_message_debug_0, 'print'))
        self.msg_connect((self.semcom_semantic_tx_0, 'pdus'), (self.semcom_packet_tx_0, 'in'))
        self.connect((self.blocks_multiply_const_vxx_0, 0), (self.osmosdr_sink_0, 0))
        self.connect((self.semcom_bursts_to_stream_0, 0), (self.blocks_multiply_const_vxx_0, 0))
        self.connect((self.semcom_packet_tx_0, 0), (self.semcom_bursts_to_stream_0, 0))


    def get_amplitude(self):
        return self.amplitude

    def set_amplitude(self, amplitude):
        self.amplitude = amplitude
        self.blocks_multiply_const_vxx_0.set_k(self.amplitude)

    def get_config(self):
        return self.config

    def set_config(self, config):
        self.config = config

    def get_device_args(self):
        return self.device_args

    def set_device_args(self, device_args):
        self.device_args = device_args

    def get_fec(self):
        return self.fec

    def set_fec(self, fec):
        self.fec = fec

    def get_freq(self):
        return self.freq

    def set_freq(self, freq):
        self.freq = freq
        self.osmosdr_sink_0.set_center_freq(self.freq, 0)

    def get_if_gain(self):
        return self.if_gain

    def set_if_gain(self, if_gain):
        self.if_gain = if_gain
        self.osmosdr_sink_0.set_if_gain(self.if_gain, 0)

    def get_image(self):
        return self.image

    def set_image(self, image):
        self.image = image
        self.set_image_file(self.image or str(semcom.paths.data_path('photos', 'chelsea.png')))

    def get_modulation(self):
        return self.modulation

    def set_modulation(self, modulation):
        self.modulation = modulation

    def get_repeat_s(self):
        return self.repeat_s

    def set_repeat_s(self, repeat_s):
        self.repeat_s = repeat_s
        self.blocks_message_strobe_0.set_period((int(self.repeat_s * 1000)))

    def get_rf_gain(self):
        return self.rf_gain

    def set_rf_gain(self, rf_gain):
        self.rf_gain = rf_gain
        self.osmosdr_sink_0.set_gain(self.rf_gain, 0)

    def get_samp_rate(self):
        return self.samp_rate

    def set_samp_rate(self, samp_rate):
        self.samp_rate = samp_rate
        self.osmosdr_sink_0.set_sample_rate(self.samp_rate)

    def get_sps(self):
        return self.sps

    def set_sps(self, sps):
        self.sps = sps

    def get_image_file(self):
        return self.image_file

    def set_image_file(self, image_file):
        self.image_file = image_file
        self.blocks_message_strobe_0.set_msg(pmt.intern(self.image_file))



def argument_parser():
    description = 'semantic_tx -> packet_tx -> bursts_to_stream -> amplitude -> osmosdr sink (hackrf=0); Ctrl-C to stop'
    parser = ArgumentParser(description=description)
    parser.add_argument(
        "--amplitude", dest="amplitude", type=eng_float, default=eng_notation.num_to_str(float(0.5)),
        help="Set Baseband amplitude (peaks must stay below 1) [default=%(default)r]")
    parser.add_argument(
        "--config", dest="config", type=str, default='',
        help="Set Pipeline preset (empty: built-in) [default=%(default)r]")
    parser.add_argument(
        "--device-args", dest="device_args", type=str, default='hackrf=0',
        help="Set osmosdr device string [default=%(default)r]")
    parser.add_argument(
        "--fec", dest="fec", type=str, default='cc',
        help="Set FEC (cc, repetition, none) [default=%(default)r]")
    parser.add_argument(
        "--freq", dest="freq", type=eng_float, default=eng_notation.num_to_str(float(433.92e6)),
        help="Set Centre frequency (Hz) [default=%(default)r]")
    parser.add_argument(
        "--if-gain", dest="if_gain", type=eng_float, default=eng_notation.num_to_str(float(20)),
        help="Set TX IF (VGA) gain 0-47 dB [default=%(default)r]")
    parser.add_argument(
        "--image", dest="image", type=str, default='',
        help="Set Image (empty: bundled chelsea.png) [default=%(default)r]")
    parser.add_argument(
        "--modulation", dest="modulation", type=str, default='qpsk',
        help="Set Modulation (bpsk, qpsk, 16qam) [default=%(default)r]")
    parser.add_argument(
        "--repeat-s", dest="repeat_s", type=eng_float, default=eng_notation.num_to_str(float(5)),
        help="Set Resend the image every (s) [default=%(default)r]")
    parser.add_argument(
        "--rf-gain", dest="rf_gain", type=eng_float, default=eng_notation.num_to_str(float(0)),
        help="Set TX RF amp (0 or 14 dB) [default=%(default)r]")
    parser.add_argument(
        "--samp-rate", dest="samp_rate", type=eng_float, default=eng_notation.num_to_str(float(2e6)),
        help="Set Sample rate (S/s) [default=%(default)r]")
    parser.add_argument(
        "--sps", dest="sps", type=intx, default=2,
        help="Set Samples per symbol (2, 4, 8) [default=%(default)r]")
    return parser


def main(top_block_cls=ota_tx_hackrf, options=None):
    if options is None:
        options = argument_parser().parse_args()
    tb = top_block_cls(amplitude=options.amplitude, config=options.config, device_args=options.device_args, fec=options.fec, freq=options.freq, if_gain=options.if_gain, image=options.image, modulation=options.modulation, repeat_s=options.repeat_s, rf_gain=options.rf_gain, samp_rate=options.samp_rate, sps=options.sps)

    def sig_handler(sig=None, frame=None):
        tb.stop()
        tb.wait()

        sys.exit(0)

    signal.signal(signal.SIGINT, sig_handler)
    signal.signal(signal.SIGTERM, sig_handler)

    tb.start()

    tb.wait()


if __name__ == '__main__':
    main()
