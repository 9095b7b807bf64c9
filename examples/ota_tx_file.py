#!/usr/bin/env python3
# -*- coding: utf-8 -*-

#
# SPDX-License-Identifier: GPL-3.0
#
# GNU Radio Python Flow Graph
# Title: semcom OTA TX to an IQ file
# Author: gr-semcom
# Description: semantic_tx -> packet_tx -> bursts_to_stream -> throttle -> channel model (noise, frequency and clock offset) -> complex64 IQ file; records duration_s from the first burst
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
from semcom.radio import packet
from semcom.radio import stream
import pmt, semcom.paths
import semcom.radio.packet
import semcom.radio.semantic_tx


def snipfcn_snippet_0(self):
    import sys
    import semcom.radio.stream
    problem = semcom.radio.stream.finish_recording(self, self.blocks_head_0, self.n_samples, self.semcom_semantic_tx_0, self.semcom_bursts_to_stream_0)
    if problem:
        sys.exit(problem)


def snippets_main_after_start(tb):
    snipfcn_snippet_0(tb)


class ota_tx_file(gr.top_block):

    def __init__(self, clock_ppm=100, config='', duration_s=4, fec='cc', freq_offset_hz=200, image='', modulation='qpsk', output_file='ota_iq.cf32', samp_rate=1e6, snr_db=20, sps=2):
        gr.top_block.__init__(self, "semcom OTA TX to an IQ file", catch_exceptions=True)

        ##################################################
        # Parameters
        ##################################################
        self.clock_ppm = clock_ppm
        self.config = config
        self.duration_s = duration_s
        self.fec = fec
        self.freq_offset_hz = freq_offset_hz
        self.image = image
        self.modulation = modulation
        self.output_file = output_file
        self.samp_rate = samp_rate
        self.snr_db = snr_db
        self.sps = sps

        ##################################################
        # Variables
        ##################################################
        self.noise_voltage = noise_voltage = semcom.radio.packet.noise_voltage_for_snr(snr_db, modulation, sps)
        self.n_samples = n_samples = int(duration_s * samp_rate)
        self.image_file = image_file = image or str(semcom.paths.data_path('photos', 'chelsea.png'))

        ##################################################
        # Blocks
        ##################################################

        self.semcom_semantic_tx_0 = semcom.radio.semantic_tx.semantic_tx(image_path=image_file, config=config, key_mask_path='', first_image_id=0, endpoint='', worker_timeout_s=30.0, protected_mcs="", key_mcs="", adapt=False, budget_symbols=0, cbr=0.0, plan_snr_db=None, hybrid=False)
        self.semcom_packet_tx_0 = packet.packet_tx(modulation=modulation, fec_code=fec, samples_per_symbol=sps, excess_bw=0.35, mtu_bytes=1500)
        self.semcom_bursts_to_stream_0 = stream.bursts_to_stream(wait_for_first_burst=True)
        self.channels_channel_model_0 = channels.channel_model(
            noise_voltage=noise_voltage,
            frequency_offset=(freq_offset_hz / samp_rate),
            epsilon=(1 + clock_ppm * 1e-6),
            taps=[1.0],
            noise_seed=42,
            block_tags=False)
        self.blocks_throttle_0 = blocks.throttle(gr.sizeof_gr_complex*1, samp_rate,True)
        self.blocks_message_debug_0 = blocks.message_debug(True)
        self.blocks_head_0 = blocks.head(gr.sizeof_gr_complex*1, n_samples)
        self.blocks_file_sink_0 = blocks.file_sink(gr.sizeof_gr_complex*1, output_file, False)
        self.blocks_file_sink_0.set_unbuffered(False)


        ##################################################
        # Connections
        ##################################################
        self.msg_connect((self.semcom_semantic_tx_0, 'info'), (self.blocks_message_debug_0, 'print'))
        self.msg_connect((self.semcom_semantic_tx_0, 'pdus'), (self.semcom_packet_tx_0, 'in'))
        self.connect((self.blocks_head_0, 0), (self.blocks_file_sink_0, 0))
        self.connect((self.blocks_throttle_0, 0), (self.channels_channel_model_0, 0))
        self.connect((self.channels_channel_model_0, 0), (self.blocks_head_0, 0))
        self.connect((self.semcom_bursts_to_stream_0, 0), (self.blocks_throttle_0, 0))
        self.connect((self.semcom_packet_tx_0, 0), (self.semcom_bursts_to_stream_0, 0))


    def get_clock_ppm(self):
        return self.clock_ppm

    def set_clock_ppm(self, clock_ppm):
        self.clock_ppm = clock_ppm
        self.channels_channel_model_0.set_timing_offset((1 + self.clock_ppm * 1e-6))

    def get_config(self):
        return self.config

    def set_config(self, config):
        self.config = config

    def get_duration_s(self):
        return self.duration_s

    def set_duration_s(self, duration_s):
        self.duration_s = duration_s
        self.set_n_samples(int(self.duration_s * self.samp_rate))

    def get_fec(self):
        return self.fec

    def set_fec(self, fec):
        self.fec = fec

    def get_freq_offset_hz(self):
        return self.freq_offset_hz

    def set_freq_offset_hz(self, freq_offset_hz):
        self.freq_offset_hz = freq_offset_hz
        self.channels_channel_model_0.set_frequency_offset((self.freq_offset_hz / self.samp_rate))

    def get_image(self):
        return self.image

    def set_image(self, image):
        self.image = image
        self.set_image_file(self.image or str(semcom.paths.data_path('photos', 'chelsea.png')))

    def get_modulation(self):
        return self.modulation

    def set_modulation(self, modulation):
        self.modulation = modulation
        self.set_noise_voltage(semcom.radio.packet.noise_voltage_for_snr(self.snr_db, self.modulation, self.sps))

    def get_output_file(self):
        return self.output_file

    def set_output_file(self, output_file):
        self.output_file = output_file
        self.blocks_file_sink_0.open(self.output_file)

    def get_samp_rate(self):
        return self.samp_rate

    def set_samp_rate(self, samp_rate):
        self.samp_rate = samp_rate
        self.set_n_samples(int(self.duration_s * self.samp_rate))
        self.blocks_throttle_0.set_sample_rate(self.samp_rate)
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

    def get_n_samples(self):
        return self.n_samples

    def set_n_samples(self, n_samples):
        self.n_samples = n_samples
        self.blocks_head_0.set_length(self.n_samples)

    def get_image_file(self):
        return self.image_file

    def set_image_file(self, image_file):
        self.image_file = image_file



def argument_parser():
    description = 'semantic_tx -> packet_tx -> bursts_to_stream -> throttle -> channel model (noise, frequency and clock offset) -> complex64 IQ file; records duration_s from the first burst'
    parser = ArgumentParser(description=description)
    parser.add_argument(
        "--clock-ppm", dest="clock_ppm", type=eng_float, default=eng_notation.num_to_str(float(100)),
        help="Set Sample clock offset (ppm) [default=%(default)r]")
    parser.add_argument(
        "--config", dest="config", type=str, default='',
        help="Set Pipeline preset (empty: built-in) [default=%(default)r]")
    parser.add_argument(
        "--duration-s", dest="duration_s", type=eng_float, default=eng_notation.num_to_str(float(4)),
        help="Set Recording length (s) [default=%(default)r]")
    parser.add_argument(
        "--fec", dest="fec", type=str, default='cc',
        help="Set FEC (cc, repetition, none) [default=%(default)r]")
    parser.add_argument(
        "--freq-offset-hz", dest="freq_offset_hz", type=eng_float, default=eng_notation.num_to_str(float(200)),
        help="Set Frequency offset (Hz) [default=%(default)r]")
    parser.add_argument(
        "--image", dest="image", type=str, default='',
        help="Set Image (empty: bundled chelsea.png) [default=%(default)r]")
    parser.add_argument(
        "--modulation", dest="modulation", type=str, default='qpsk',
        help="Set Modulation (bpsk, qpsk, 16qam) [default=%(default)r]")
    parser.add_argument(
        "--output-file", dest="output_file", type=str, default='ota_iq.cf32',
        help="Set IQ file (complex64) [default=%(default)r]")
    parser.add_argument(
        "--samp-rate", dest="samp_rate", type=eng_float, default=eng_notation.num_to_str(float(1e6)),
        help="Set Sample rate (S/s) [default=%(default)r]")
    parser.add_argument(
        "--snr-db", dest="snr_db", type=eng_float, default=eng_notation.num_to_str(float(20)),
        help="Set Es/N0 (dB) [default=%(default)r]")
    parser.add_argument(
        "--sps", dest="sps", type=intx, default=2,
        help="Set Samples per symbol (2, 4, 8) [default=%(default)r]")
    return parser


def main(top_block_cls=ota_tx_file, options=None):
    if options is None:
        options = argument_parser().parse_args()
    tb = top_block_cls(clock_ppm=options.clock_ppm, config=options.config, duration_s=options.duration_s, fec=options.fec, freq_offset_hz=options.freq_offset_hz, image=options.image, modulation=options.modulation, output_file=options.output_file, samp_rate=options.samp_rate, snr_db=options.snr_db, sps=options.sps)

    def sig_handler(sig=None, frame=None):
        tb.stop()
        tb.wait()

        sys.exit(0)

    signal.signal(signal.SIGINT, sig_handler)
    signal.signal(signal.SIGTERM, sig_handler)

    tb.start()
    snippets_main_after_start(tb)
    tb.wait()


if __name__ == '__main__':
    main()
