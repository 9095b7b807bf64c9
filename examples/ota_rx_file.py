#!/usr/bin/env python3
# -*- coding: utf-8 -*-

#
# SPDX-License-Identifier: GPL-3.0
#
# GNU Radio Python Flow Graph
# Title: semcom OTA RX from an IQ file
# Author: gr-semcom
# Description: complex64 IQ file -> semantic_receiver (AGC, packet_rx, semantic_rx) -> PNG; ends with the file
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
from semcom.radio import receiver




class ota_rx_file(gr.top_block):

    def __init__(self, config='', endpoint='', fec='cc', input_file='ota_iq.cf32', modulation='qpsk', output='rx_{image_id}.png', sps=2):
        gr.top_block.__init__(self, "semcom OTA RX from an IQ file", catch_exceptions=True)

        ##################################################
        # Parameters
        ##################################################
        self.config = config
        self.endpoint = endpoint
        self.fec = fec
        self.input_file = input_file
        self.modulation = modulation
        self.output = output
        self.sps = sps

        ##################################################
        # Blocks
        ##################################################

        self.semcom_semantic_receiver_0 = receiver.semantic_receiver(modulation=modulation, fec_code=fec, samples_per_symbol=sps, excess_bw=0.35, mtu_bytes=1500, output_path=output, config=config, timeout_s=1.0, agc=True, endpoint=endpoint, coarse_cfo=True)
        self.blocks_null_sink_1 = blocks.null_sink(gr.sizeof_gr_complex*1)
        self.blocks_null_sink_0 = blocks.null_sink(gr.sizeof_gr_complex*1)
        self.blocks_message_debug_0 = blocks.message_debug(True)
        self.blocks_file_source_0 = blocks.file_source(gr.sizeof_gr_complex*1, input_file, False, 0, 0)
        self.blocks_file_source_0.set_begin_tag(pmt.PMT_NIL)


        ##################################################
        # Connections
        ##################################################
        self.msg_connect((self.semcom_semantic_receiver_0, 'info'), (self.blocks_message_debug_0, 'print'))
        self.connect((self.blocks_file_source_0, 0), (self.semcom_semantic_receiver_0, 0))
        self.connect((self.semcom_semantic_receiver_0, 0), (self.blocks_null_sink_0, 0))
        self.connect((self.semcom_semantic_receiver_0, 1), (self.blocks_null_sink_1, 0))


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

    def get_input_file(self):
        return self.input_file

    def set_input_file(self, input_file):
        self.input_file = input_file
        self.blocks_file_source_0.open(self.input_file, False)

    def get_modulation(self):
        return self.modulation

    def set_modulation(self, modulation):
        self.modulation = modulation

    def get_output(self):
        return self.output

    def set_output(self, output):
        self.output = output

    def get_sps(self):
        return self.sps

    def set_sps(self, sps):
        self.sps = sps



def argument_parser():
    description = 'complex64 IQ file -> semantic_receiver (AGC, packet_rx, semantic_rx) -> PNG; ends with the file'
    parser = ArgumentParser(description=description)
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
        "--input-file", dest="input_file", type=str, default='ota_iq.cf32',
        help="Set IQ file (complex64) [default=%(default)r]")
    parser.add_argument(
        "--modulation", dest="modulation", type=str, default='qpsk',
        help="Set Modulation (bpsk, qpsk, 16qam) [default=%(default)r]")
    parser.add_argument(
        "--output", dest="output", type=str, default='rx_{image_id}.png',
        help="Set Received image PNG ({image_id} = image number) [default=%(default)r]")
    parser.add_argument(
        "--sps", dest="sps", type=intx, default=2,
        help="Set Samples per symbol (2, 4, 8) [default=%(default)r]")
    return parser


def main(top_block_cls=ota_rx_file, options=None):
    if options is None:
        options = argument_parser().parse_args()
    tb = top_block_cls(config=options.config, endpoint=options.endpoint, fec=options.fec, input_file=options.input_file, modulation=options.modulation, output=options.output, sps=options.sps)

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
