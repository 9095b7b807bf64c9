#!/usr/bin/env python3
# -*- coding: utf-8 -*-

#
# SPDX-License-Identifier: GPL-3.0
#
# GNU Radio Python Flow Graph
# Title: semcom RX over ZeroMQ
# Author: gr-semcom
# Description: ZMQ PULL source (connects to address) -> channel model (optional noise) -> semantic_receiver -> PNG
# GNU Radio version: 3.10.5.1

from gnuradio import blocks
from gnuradio import channels
from gnuradio.filter import firdes
from gnuradio import gr
from gnuradio.fft import window
import sys
import signal
from argparse import ArgumentParser
from gnuradio.eng_arg import eng_float, intx
from gnuradio import eng_notation
from gnuradio import zeromq
from semcom.radio import receiver
import semcom.radio.packet




class zmq_rx(gr.top_block):

    def __init__(self, address='tcp://127.0.0.1:5601', config='', endpoint='', fec='cc', freq_offset_hz=0, clock_ppm=0, modulation='qpsk', output='rx_{image_id}.png', samp_rate=1e6, snr_db=100, sps=2):
        gr.top_block.__init__(self, "semcom RX over ZeroMQ", catch_exceptions=True)

        ##################################################
        # Parameters
        ##################################################
        self.address = address
        self.config = config
        self.endpoint = endpoint
        self.fec = fec
        self.freq_offset_hz = freq_offset_hz
        self.clock_ppm = clock_ppm
        self.modulation = modulation
        self.output = output
        self.samp_rate = samp_rate
        self.snr_db = snr_db
        self.sps = sps

        ##################################################
        # Variables
        ##################################################
        self.noise_voltage = noise_voltage = semcom.radio.packet.noise_voltage_for_snr(snr_db, modulation, sps)

        ##################################################
        # Blocks
        ##################################################

        self.zeromq_pull_source_0 = zeromq.pull_source(gr.sizeof_gr_complex, 1, address, 100, False, (-1))
        self.semcom_semantic_receiver_0 = receiver.semantic_receiver(modulation=modulation, fec_code=fec, samples_per_symbol=sps, excess_bw=0.35, mtu_bytes=1500, output_path=output, config=config, timeout_s=1.0, agc=False, endpoint=endpoint, coarse_cfo=False)
        self.channels_channel_model_0 = channels.channel_model(
            noise_voltage=noise_voltage,
            frequency_offset=(freq_offset_hz / samp_rate),
            epsilon=(1 + clock_ppm * 1e-6),
            taps=[1.0],
            noise_seed=7,
            block_tags=False)
        self.blocks_null_sink_1 = blocks.null_sink(gr.sizeof_gr_complex*1)
        self.blocks_null_sink_0 = blocks.null_sink(gr.sizeof_gr_complex*1)
        self.blocks_message_debug_0 = blocks.message_debug(True)


        ##################################################
        # Connections
        ##################################################
        self.msg_connect((self.semcom_semantic_receiver_0, 'info'), (self.blocks_message_debug_0, 'print'))
        self.connect((self.channels_channel_model_0, 0), (self.semcom_semantic_receiver_0, 0))
        self.connect((self.semcom_semantic_receiver_0, 0), (self.blocks_null_sink_0, 0))
        self.connect((self.semcom_semantic_receiver_0, 1), (self.blocks_null_sink_1, 0))
        self.connect((self.zeromq_pull_source_0, 0), (self.channels_channel_model_0, 0))


    def get_address(self):
        return self.address

    def set_address(self, address):
        self.address = address

    def get_config(self):
        return self.config

    def set_config(self, config):
        self.config = config

    def get_endpoint(self):
        return self.endpoint

    def set_endpoint(self, endpoint):
        self.endpoint = endpoint

    def get_fec(self):
        return self.fec

    def set_fec(self, fec):
        self.fec = fec

    def get_freq_offset_hz(self):
        return self.freq_offset_hz

    def set_freq_offset_hz(self, freq_offset_hz):
        self.freq_offset_hz = freq_offset_hz
        self.channels_channel_model_0.set_frequency_offset((self.freq_offset_hz / self.samp_rate))

    def get_clock_ppm(self):
        return self.clock_ppm

    def set_clock_ppm(self, clock_ppm):
        self.clock_ppm = clock_ppm
        self.channels_channel_model_0.set_timing_offset((1 + self.clock_ppm * 1e-6))

    def get_modulation(self):
        return self.modulation

    def set_modulation(self, modulation):
        self.modulation = modulation
        self.set_noise_voltage(semcom.radio.packet.noise_voltage_for_snr(self.snr_db, self.modulation, self.sps))

    def get_output(self):
        return self.output

    def set_output(self, output):
        self.output = output

    def get_samp_rate(self):
        return self.samp_rate

    def set_samp_rate(self, samp_rate):
        self.samp_rate = samp_rate
        self.channels_channel_model_0.set_frequency_offset((self.freq_offset_hz / self.samp_rate))

    def get_snr_db(self):
        return self.snr_db

    def set_snr_db(self, snr_db):
        self.snr_db = snr_db
        self.set_noise_voltage(semcom.radio.packet.noise_voltage_for_snr(self.snr_db, self.modulation, self.sps))

    def get_sps(self):
        return self.sps

    def set_sps(self, sps):
        self.sps = sps
        self.set_noise_voltage(semcom.radio.packet.noise_voltage_for_snr(self.snr_db, self.modulation, self.sps))

    def get_noise_voltage(self):
        return self.noise_voltage

    def set_noise_voltage(self, noise_voltage):
        self.noise_voltage = noise_voltage
        self.channels_channel_model_0.set_noise_voltage(self.noise_voltage)



def argument_parser():
    description = 'ZMQ PULL source (connects to address) -> channel model (optional noise) -> semantic_receiver -> PNG'
    parser = ArgumentParser(description=description)
    parser.add_argument(
        "--address", dest="address", type=str, default='tcp://127.0.0.1:5601',
        help="Set ZMQ address of the TX (tcp://host:port) [default=%(default)r]")
    parser.add_argument(
        "--config", dest="config", type=str, default='',
        help="Set Pipeline preset (empty: built-in) [default=%(default)r]")
    parser.add_argument(
        "--endpoint", dest="endpoint", type=str, default='',
        help="Set Inference worker (empty: in-process) [default=%(default)r]")
    parser.add_argument(
        "--fec", dest="fec", type=str, default='cc',
        help="Set FEC (cc, repetition, none) [default=%(default)r]")
    parser.add_argument(
        "--freq-offset-hz", dest="freq_offset_hz", type=eng_float, default=eng_notation.num_to_str(float(0)),
        help="Set Channel frequency offset (Hz) [default=%(default)r]")
    parser.add_argument(
        "--clock-ppm", dest="clock_ppm", type=eng_float, default=eng_notation.num_to_str(float(0)),
        help="Set Channel sample-clock offset (ppm) [default=%(default)r]")
    parser.add_argument(
        "--modulation", dest="modulation", type=str, default='qpsk',
        help="Set Modulation (bpsk, qpsk, 16qam) [default=%(default)r]")
    parser.add_argument(
        "--output", dest="output", type=str, default='rx_{image_id}.png',
        help="Set Received image PNG ({image_id} = image number) [default=%(default)r]")
    parser.add_argument(
        "--samp-rate", dest="samp_rate", type=eng_float, default=eng_notation.num_to_str(float(1e6)),
        help="Set Sample rate (S/s, for the offset) [default=%(default)r]")
    parser.add_argument(
        "--snr-db", dest="snr_db", type=eng_float, default=eng_notation.num_to_str(float(100)),
        help="Set Channel Es/N0 (dB); 100 = no channel [default=%(default)r]")
    parser.add_argument(
        "--sps", dest="sps", type=intx, default=2,
        help="Set Samples per symbol (2, 4, 8) [default=%(default)r]")
    return parser


def main(top_block_cls=zmq_rx, options=None):
    if options is None:
        options = argument_parser().parse_args()
    tb = top_block_cls(address=options.address, config=options.config, endpoint=options.endpoint, fec=options.fec, freq_offset_hz=options.freq_offset_hz, clock_ppm=options.clock_ppm, modulation=options.modulation, output=options.output, samp_rate=options.samp_rate, snr_db=options.snr_db, sps=options.sps)

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
