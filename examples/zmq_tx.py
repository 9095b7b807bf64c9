#!/usr/bin/env python3
# -*- coding: utf-8 -*-

#
# SPDX-License-Identifier: GPL-3.0
#
# GNU Radio Python Flow Graph
# Title: semcom TX over ZeroMQ
# Author: gr-semcom
# Description: semantic_tx -> packet_tx -> bursts_to_stream -> throttle -> ZMQ PUSH sink (binds address); Ctrl-C to stop
# GNU Radio version: 3.10.5.1

from gnuradio import blocks
from gnuradio import gr
from gnuradio.filter import firdes
from gnuradio.fft import window
import sys
import signal
from argparse import ArgumentParser
from gnuradio.eng_arg import eng_float, intx
from gnuradio import eng_notation
from gnuradio import zeromq
from semcom.radio import packet
from semcom.radio import stream
import pmt, semcom.paths
import semcom.radio.semantic_tx




class zmq_tx(gr.top_block):

    def __init__(self, address='tcp://127.0.0.1:5601', config='', fec='cc', image='', modulation='qpsk', samp_rate=1e6, sps=2):
        gr.top_block.__init__(self, "semcom TX over ZeroMQ", catch_exceptions=True)

        ##################################################
        # Parameters
        ##################################################
        self.address = address
        self.config = config
        self.fec = fec
        self.image = image
        self.modulation = modulation
        self.samp_rate = samp_rate
        self.sps = sps

        ##################################################
        # Variables
        ##################################################
        self.image_file = image_file = image or str(semcom.paths.data_path('photos', 'chelsea.png'))

        ##################################################
        # Blocks
        ##################################################

        self.zeromq_push_sink_0 = zeromq.push_sink(gr.sizeof_gr_complex, 1, address, 100, False, (-1))
        self.semcom_semantic_tx_0 = semcom.radio.semantic_tx.semantic_tx(image_path=image_file, config=config, key_mask_path='', first_image_id=0, endpoint='', worker_timeout_s=30.0, protected_mcs="", key_mcs="", adapt=False, budget_symbols=0, cbr=0.0, plan_snr_db=None, hybrid=False)
        self.semcom_packet_tx_0 = packet.packet_tx(modulation=modulation, fec_code=fec, samples_per_symbol=sps, excess_bw=0.35, mtu_bytes=1500)
        self.semcom_bursts_to_stream_0 = stream.bursts_to_stream(wait_for_first_burst=False)
        self.blocks_throttle_0 = blocks.throttle(gr.sizeof_gr_complex*1, samp_rate,True)
        self.blocks_message_debug_0 = blocks.message_debug(True)


        ##################################################
        # Connections
        ##################################################
        self.msg_connect((self.semcom_semantic_tx_0, 'info'), (self.blocks_message_debug_0, 'print'))
        self.msg_connect((self.semcom_semantic_tx_0, 'pdus'), (self.semcom_packet_tx_0, 'in'))
        self.connect((self.blocks_throttle_0, 0), (self.zeromq_push_sink_0, 0))
        self.connect((self.semcom_bursts_to_stream_0, 0), (self.blocks_throttle_0, 0))
        self.connect((self.semcom_packet_tx_0, 0), (self.semcom_bursts_to_stream_0, 0))


    def get_address(self):
        return self.address

    def set_address(self, address):
        self.address = address

    def get_config(self):
        return self.config

    def set_config(self, config):
        self.config = config

    def get_fec(self):
        return self.fec

    def set_fec(self, fec):
        self.fec = fec

    def get_image(self):
        return self.image

    def set_image(self, image):
        self.image = image
        self.set_image_file(self.image or str(semcom.paths.data_path('photos', 'chelsea.png')))

    def get_modulation(self):
        return self.modulation

    def set_modulation(self, modulation):
        self.modulation = modulation

    def get_samp_rate(self):
        return self.samp_rate

    def set_samp_rate(self, samp_rate):
        self.samp_rate = samp_rate
        self.blocks_throttle_0.set_sample_rate(self.samp_rate)

    def get_sps(self):
        return self.sps

    def set_sps(self, sps):
        self.sps = sps

    def get_image_file(self):
        return self.image_file

    def set_image_file(self, image_file):
        self.image_file = image_file



def argument_parser():
    description = 'semantic_tx -> packet_tx -> bursts_to_stream -> throttle -> ZMQ PUSH sink (binds address); Ctrl-C to stop'
    parser = ArgumentParser(description=description)
    parser.add_argument(
        "--address", dest="address", type=str, default='tcp://127.0.0.1:5601',
        help="Set ZMQ address to bind (tcp://host:port) [default=%(default)r]")
    parser.add_argument(
        "--config", dest="config", type=str, default='',
        help="Set Pipeline preset (empty: built-in) [default=%(default)r]")
    parser.add_argument(
        "--fec", dest="fec", type=str, default='cc',
        help="Set FEC (cc, repetition, none) [default=%(default)r]")
    parser.add_argument(
        "--image", dest="image", type=str, default='',
        help="Set Image (empty: bundled chelsea.png) [default=%(default)r]")
    parser.add_argument(
        "--modulation", dest="modulation", type=str, default='qpsk',
        help="Set Modulation (bpsk, qpsk, 16qam) [default=%(default)r]")
    parser.add_argument(
        "--samp-rate", dest="samp_rate", type=eng_float, default=eng_notation.num_to_str(float(1e6)),
        help="Set Sample rate (S/s) [default=%(default)r]")
    parser.add_argument(
        "--sps", dest="sps", type=intx, default=2,
        help="Set Samples per symbol (2, 4, 8) [default=%(default)r]")
    return parser


def main(top_block_cls=zmq_tx, options=None):
    if options is None:
        options = argument_parser().parse_args()
    tb = top_block_cls(address=options.address, config=options.config, fec=options.fec, image=options.image, modulation=options.modulation, samp_rate=options.samp_rate, sps=options.sps)

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
