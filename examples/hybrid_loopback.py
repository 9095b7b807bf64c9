#!/usr/bin/env python3
# -*- coding: utf-8 -*-

#
# SPDX-License-Identifier: GPL-3.0
#
# GNU Radio Python Flow Graph
# Title: semcom hybrid loopback
# Author: gr-semcom
# Description: semantic_tx (hybrid) -> analog_tx -> channel model -> analog_rx -> hybrid_rx: header and text as coded BPSK, key tiles as DeepJSCC symbols, one analog PHY; writes the reconstruction to output_path
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
from semcom.radio import analog
import semcom.paths, semcom.radio.packet
import semcom.radio.hybrid_rx
import semcom.radio.semantic_tx




class hybrid_loopback(gr.top_block):

    def __init__(self, image_path='', output_path='hybrid_rx.png', snr_db=0):
        gr.top_block.__init__(self, "semcom hybrid loopback", catch_exceptions=True)

        ##################################################
        # Parameters
        ##################################################
        self.image_path = image_path
        self.output_path = output_path
        self.snr_db = snr_db

        ##################################################
        # Variables
        ##################################################
        self.samples_per_symbol = samples_per_symbol = 2
        self.timing_offset = timing_offset = 1.00002
        self.noise_voltage = noise_voltage = semcom.radio.packet.noise_voltage_for_snr(snr_db, 'bpsk', samples_per_symbol)
        self.image_file = image_file = image_path or str(semcom.paths.data_path('photos', 'chelsea.png'))
        self.freq_offset = freq_offset = 2e-4

        ##################################################
        # Blocks
        ##################################################

        self.semcom_semantic_tx_0 = semcom.radio.semantic_tx.semantic_tx(image_path=image_file, config='', key_mask_path='', first_image_id=0, endpoint='', worker_timeout_s=30.0, protected_mcs="", key_mcs="", adapt=False, budget_symbols=0, cbr=(1/6), plan_snr_db=snr_db, hybrid=True)
        self.semcom_hybrid_rx_0 = semcom.radio.hybrid_rx.hybrid_rx(output_path=output_path, config='', timeout_s=1.0, max_open_images=4, max_frames_per_image=512)
        self.semcom_analog_tx_0 = analog.analog_tx(samples_per_symbol=samples_per_symbol, excess_bw=0.35)
        self.semcom_analog_rx_0 = analog.analog_rx(samples_per_symbol=samples_per_symbol, excess_bw=0.35)
        self.channels_channel_model_0 = channels.channel_model(
            noise_voltage=noise_voltage,
            frequency_offset=freq_offset,
            epsilon=timing_offset,
            taps=[1.0],
            noise_seed=42,
            block_tags=False)
        self.blocks_message_debug_0 = blocks.message_debug(True)


        ##################################################
        # Connections
        ##################################################
        self.msg_connect((self.semcom_analog_rx_0, 'out'), (self.semcom_hybrid_rx_0, 'frames'))
        self.msg_connect((self.semcom_hybrid_rx_0, 'info'), (self.blocks_message_debug_0, 'print'))
        self.msg_connect((self.semcom_semantic_tx_0, 'info'), (self.blocks_message_debug_0, 'print'))
        self.msg_connect((self.semcom_semantic_tx_0, 'symbols'), (self.semcom_analog_tx_0, 'in'))
        self.connect((self.channels_channel_model_0, 0), (self.semcom_analog_rx_0, 0))
        self.connect((self.semcom_analog_tx_0, 0), (self.channels_channel_model_0, 0))


    def get_image_path(self):
        return self.image_path

    def set_image_path(self, image_path):
        self.image_path = image_path
        self.set_image_file(self.image_path or str(semcom.paths.data_path('photos', 'chelsea.png')))

    def get_output_path(self):
        return self.output_path

    def set_output_path(self, output_path):
        self.output_path = output_path

    def get_snr_db(self):
        return self.snr_db

    def set_snr_db(self, snr_db):
        self.snr_db = snr_db
        self.set_noise_voltage(semcom.radio.packet.noise_voltage_for_snr(self.snr_db, 'bpsk', self.samples_per_symbol))

    def get_samples_per_symbol(self):
        return self.samples_per_symbol

    def set_samples_per_symbol(self, samples_per_symbol):
        self.samples_per_symbol = samples_per_symbol
        self.set_noise_voltage(semcom.radio.packet.noise_voltage_for_snr(self.snr_db, 'bpsk', self.samples_per_symbol))

    def get_timing_offset(self):
        return self.timing_offset

    def set_timing_offset(self, timing_offset):
        self.timing_offset = timing_offset
        self.channels_channel_model_0.set_timing_offset(self.timing_offset)

    def get_noise_voltage(self):
        return self.noise_voltage

    def set_noise_voltage(self, noise_voltage):
        self.noise_voltage = noise_voltage
        self.channels_channel_model_0.set_noise_voltage(self.noise_voltage)

    def get_image_file(self):
        return self.image_file

    def set_image_file(self, image_file):
        self.image_file = image_file

    def get_freq_offset(self):
        return self.freq_offset

    def set_freq_offset(self, freq_offset):
        self.freq_offset = freq_offset
        self.channels_channel_model_0.set_frequency_offset(self.freq_offset)



def argument_parser():
    description = 'semantic_tx (hybrid) -> analog_tx -> channel model -> analog_rx -> hybrid_rx: header and text as coded BPSK, key tiles as DeepJSCC symbols, one analog PHY; writes the reconstruction to output_path'
    parser = ArgumentParser(description=description)
    parser.add_argument(
        "--image-path", dest="image_path", type=str, default='',
        help="Set Image (empty: bundled chelsea.png) [default=%(default)r]")
    parser.add_argument(
        "--output-path", dest="output_path", type=str, default='hybrid_rx.png',
        help="Set Reconstruction PNG [default=%(default)r]")
    parser.add_argument(
        "--snr-db", dest="snr_db", type=eng_float, default=eng_notation.num_to_str(float(0)),
        help="Set Es/N0 (dB) [default=%(default)r]")
    return parser


def main(top_block_cls=hybrid_loopback, options=None):
    if options is None:
        options = argument_parser().parse_args()
    tb = top_block_cls(image_path=options.image_path, output_path=options.output_path, snr_db=options.snr_db)

    def sig_handler(sig=None, frame=None):
        tb.stop()
        tb.wait()

        sys.exit(0)

    signal.signal(signal.SIGINT, sig_handler)
    signal.signal(signal.SIGTERM, sig_handler)

    tb.start()

    try:
        input('Press Enter to quit: ')
    except EOFError:
        pass
    tb.stop()
    tb.wait()


if __name__ == '__main__':
    main()
