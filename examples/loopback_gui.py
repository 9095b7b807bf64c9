#!/usr/bin/env python3
# -*- coding: utf-8 -*-

#
# SPDX-License-Identifier: GPL-3.0
#
# GNU Radio Python Flow Graph
# Title: semcom loopback (QT GUI)
# Author: gr-semcom
# Description: Live loopback: semantic_tx -> packet_tx -> channel model -> semantic receiver -> image display; the image is resent every 4 s, the SNR slider sets the channel noise while it runs
# GNU Radio version: 3.10.5.1

from packaging.version import Version as StrictVersion

if __name__ == '__main__':
    import ctypes
    import sys
    if sys.platform.startswith('linux'):
        try:
            x11 = ctypes.cdll.LoadLibrary('libX11.so')
            x11.XInitThreads()
        except:
            print("Warning: failed to XInitThreads()")

from PyQt5 import Qt
from gnuradio import qtgui
from gnuradio.filter import firdes
import sip
from gnuradio import blocks
import pmt
from gnuradio import channels
from gnuradio import gr
from gnuradio.fft import window
import sys
import signal
from argparse import ArgumentParser
from gnuradio.eng_arg import eng_float, intx
from gnuradio import eng_notation
from gnuradio.qtgui import Range, RangeWidget
from PyQt5 import QtCore
from semcom.radio import packet
from semcom.radio import receiver
import semcom.paths, semcom.radio.packet
import semcom.radio.image_sink
import semcom.radio.semantic_tx



from gnuradio import qtgui

class loopback_gui(gr.top_block, Qt.QWidget):

    def __init__(self, image_path=''):
        gr.top_block.__init__(self, "semcom loopback (QT GUI)", catch_exceptions=True)
        Qt.QWidget.__init__(self)
        self.setWindowTitle("semcom loopback (QT GUI)")
        qtgui.util.check_set_qss()
        try:
            self.setWindowIcon(Qt.QIcon.fromTheme('gnuradio-grc'))
        except:
            pass
        self.top_scroll_layout = Qt.QVBoxLayout()
        self.setLayout(self.top_scroll_layout)
        self.top_scroll = Qt.QScrollArea()
        self.top_scroll.setFrameStyle(Qt.QFrame.NoFrame)
        self.top_scroll_layout.addWidget(self.top_scroll)
        self.top_scroll.setWidgetResizable(True)
        self.top_widget = Qt.QWidget()
        self.top_scroll.setWidget(self.top_widget)
        self.top_layout = Qt.QVBoxLayout(self.top_widget)
        self.top_grid_layout = Qt.QGridLayout()
        self.top_layout.addLayout(self.top_grid_layout)

        self.settings = Qt.QSettings("GNU Radio", "loopback_gui")

        try:
            if StrictVersion(Qt.qVersion()) < StrictVersion("5.0.0"):
                self.restoreGeometry(self.settings.value("geometry").toByteArray())
            else:
                self.restoreGeometry(self.settings.value("geometry"))
        except:
            pass

        ##################################################
        # Parameters
        ##################################################
        self.image_path = image_path

        ##################################################
        # Variables
        ##################################################
        self.snr_db = snr_db = 12
        self.samples_per_symbol = samples_per_symbol = 2
        self.modulation = modulation = 'qpsk'
        self.timing_offset = timing_offset = 1.00002
        self.samp_rate = samp_rate = 1e6
        self.noise_voltage = noise_voltage = semcom.radio.packet.noise_voltage_for_snr(snr_db, modulation, samples_per_symbol)
        self.image_file = image_file = image_path or str(semcom.paths.data_path('photos', 'chelsea.png'))
        self.freq_offset = freq_offset = 2e-4
        self.fec_code = fec_code = 'cc'

        ##################################################
        # Blocks
        ##################################################

        self._snr_db_range = Range(0, 30, 0.5, 12, 200)
        self._snr_db_win = RangeWidget(self._snr_db_range, self.set_snr_db, "Es/N0 (dB)", "counter_slider", float, QtCore.Qt.Horizontal)
        self.top_grid_layout.addWidget(self._snr_db_win, 0, 0, 1, 2)
        for r in range(0, 1):
            self.top_grid_layout.setRowStretch(r, 1)
        for c in range(0, 2):
            self.top_grid_layout.setColumnStretch(c, 1)
        self.semcom_semantic_tx_0 = semcom.radio.semantic_tx.semantic_tx(image_path=image_file, config='', key_mask_path='', first_image_id=0, endpoint='', worker_timeout_s=30.0, protected_mcs="", key_mcs="", adapt=False, budget_symbols=0, cbr=0.0, plan_snr_db=None, hybrid=False)
        self.semcom_semantic_receiver_0 = receiver.semantic_receiver(modulation=modulation, fec_code=fec_code, samples_per_symbol=samples_per_symbol, excess_bw=0.35, mtu_bytes=1500, output_path='', config='', timeout_s=1.0, agc=False, endpoint='', coarse_cfo=False)
        self.semcom_packet_tx_0 = packet.packet_tx(modulation=modulation, fec_code=fec_code, samples_per_symbol=samples_per_symbol, excess_bw=0.35, mtu_bytes=1500)
        self.semcom_image_sink_0 = semcom.radio.image_sink.image_sink(original_path=image_file, name="Original | received (key region outlined)")
        self._semcom_image_sink_0_win = self.semcom_image_sink_0.qwidget()
        self.top_grid_layout.addWidget(self._semcom_image_sink_0_win, 1, 0, 1, 2)
        for r in range(1, 2):
            self.top_grid_layout.setRowStretch(r, 1)
        for c in range(0, 2):
            self.top_grid_layout.setColumnStretch(c, 1)
        self.qtgui_freq_sink_x_0 = qtgui.freq_sink_c(
            1024, #size
            window.WIN_BLACKMAN_hARRIS, #wintype
            0, #fc
            samp_rate, #bw
            "Channel output (what the receiver sees)", #name
            1,
            None # parent
        )
        self.qtgui_freq_sink_x_0.set_update_time(0.10)
        self.qtgui_freq_sink_x_0.set_y_axis((-80), 10)
        self.qtgui_freq_sink_x_0.set_y_label('Relative Gain', 'dB')
        self.qtgui_freq_sink_x_0.set_trigger_mode(qtgui.TRIG_MODE_FREE, 0.0, 0, "")
        self.qtgui_freq_sink_x_0.enable_autoscale(False)
        self.qtgui_freq_sink_x_0.enable_grid(False)
        self.qtgui_freq_sink_x_0.set_fft_average(0.2)
        self.qtgui_freq_sink_x_0.enable_axis_labels(True)
        self.qtgui_freq_sink_x_0.enable_control_panel(False)
        self.qtgui_freq_sink_x_0.set_fft_window_normalized(False)



        labels = ['', '', '', '', '',
            '', '', '', '', '']
        widths = [1, 1, 1, 1, 1,
            1, 1, 1, 1, 1]
        colors = ["blue", "red", "green", "black", "cyan",
            "magenta", "yellow", "dark red", "dark green", "dark blue"]
        alphas = [1.0, 1.0, 1.0, 1.0, 1.0,
            1.0, 1.0, 1.0, 1.0, 1.0]

        for i in range(1):
            if len(labels[i]) == 0:
                self.qtgui_freq_sink_x_0.set_line_label(i, "Data {0}".format(i))
            else:
                self.qtgui_freq_sink_x_0.set_line_label(i, labels[i])
            self.qtgui_freq_sink_x_0.set_line_width(i, widths[i])
            self.qtgui_freq_sink_x_0.set_line_color(i, colors[i])
            self.qtgui_freq_sink_x_0.set_line_alpha(i, alphas[i])

        self._qtgui_freq_sink_x_0_win = sip.wrapinstance(self.qtgui_freq_sink_x_0.qwidget(), Qt.QWidget)
        self.top_grid_layout.addWidget(self._qtgui_freq_sink_x_0_win, 2, 0, 1, 1)
        for r in range(2, 3):
            self.top_grid_layout.setRowStretch(r, 1)
        for c in range(0, 1):
            self.top_grid_layout.setColumnStretch(c, 1)
        self.qtgui_const_sink_x_0 = qtgui.const_sink_c(
            1024, #size
            "Symbols after clock recovery and Costas loop", #name
            1, #number of inputs
            None # parent
        )
        self.qtgui_const_sink_x_0.set_update_time(0.10)
        self.qtgui_const_sink_x_0.set_y_axis((-2), 2)
        self.qtgui_const_sink_x_0.set_x_axis((-2), 2)
        self.qtgui_const_sink_x_0.set_trigger_mode(qtgui.TRIG_MODE_FREE, qtgui.TRIG_SLOPE_POS, 0.0, 0, "")
        self.qtgui_const_sink_x_0.enable_autoscale(False)
        self.qtgui_const_sink_x_0.enable_grid(False)
        self.qtgui_const_sink_x_0.enable_axis_labels(True)


        labels = ['', '', '', '', '',
            '', '', '', '', '']
        widths = [1, 1, 1, 1, 1,
            1, 1, 1, 1, 1]
        colors = ["blue", "red", "red", "red", "red",
            "red", "red", "red", "red", "red"]
        styles = [0, 0, 0, 0, 0,
            0, 0, 0, 0, 0]
        markers = [0, 0, 0, 0, 0,
            0, 0, 0, 0, 0]
        alphas = [1.0, 1.0, 1.0, 1.0, 1.0,
            1.0, 1.0, 1.0, 1.0, 1.0]

        for i in range(1):
            if len(labels[i]) == 0:
                self.qtgui_const_sink_x_0.set_line_label(i, "Data {0}".format(i))
            else:
                self.qtgui_const_sink_x_0.set_line_label(i, labels[i])
            self.qtgui_const_sink_x_0.set_line_width(i, widths[i])
            self.qtgui_const_sink_x_0.set_line_color(i, colors[i])
            self.qtgui_const_sink_x_0.set_line_style(i, styles[i])
            self.qtgui_const_sink_x_0.set_line_marker(i, markers[i])
            self.qtgui_const_sink_x_0.set_line_alpha(i, alphas[i])

        self._qtgui_const_sink_x_0_win = sip.wrapinstance(self.qtgui_const_sink_x_0.qwidget(), Qt.QWidget)
        self.top_grid_layout.addWidget(self._qtgui_const_sink_x_0_win, 2, 1, 1, 1)
        for r in range(2, 3):
            self.top_grid_layout.setRowStretch(r, 1)
        for c in range(1, 2):
            self.top_grid_layout.setColumnStretch(c, 1)
        self.channels_channel_model_0 = channels.channel_model(
            noise_voltage=noise_voltage,
            frequency_offset=freq_offset,
            epsilon=timing_offset,
            taps=[1.0],
            noise_seed=42,
            block_tags=False)
        self.blocks_throttle_0 = blocks.throttle(gr.sizeof_gr_complex*1, samp_rate,True)
        self.blocks_message_strobe_0 = blocks.message_strobe(pmt.intern(image_file), 4000)


        ##################################################
        # Connections
        ##################################################
        self.msg_connect((self.blocks_message_strobe_0, 'strobe'), (self.semcom_semantic_tx_0, 'in'))
        self.msg_connect((self.semcom_semantic_receiver_0, 'pdus'), (self.semcom_image_sink_0, 'pdus'))
        self.msg_connect((self.semcom_semantic_receiver_0, 'image'), (self.semcom_image_sink_0, 'image'))
        self.msg_connect((self.semcom_semantic_tx_0, 'pdus'), (self.semcom_packet_tx_0, 'in'))
        self.connect((self.blocks_throttle_0, 0), (self.channels_channel_model_0, 0))
        self.connect((self.channels_channel_model_0, 0), (self.qtgui_freq_sink_x_0, 0))
        self.connect((self.channels_channel_model_0, 0), (self.semcom_semantic_receiver_0, 0))
        self.connect((self.semcom_packet_tx_0, 0), (self.blocks_throttle_0, 0))
        self.connect((self.semcom_semantic_receiver_0, 1), (self.qtgui_const_sink_x_0, 0))


    def closeEvent(self, event):
        self.settings = Qt.QSettings("GNU Radio", "loopback_gui")
        self.settings.setValue("geometry", self.saveGeometry())
        self.stop()
        self.wait()

        event.accept()

    def get_image_path(self):
        return self.image_path

    def set_image_path(self, image_path):
        self.image_path = image_path
        self.set_image_file(self.image_path or str(semcom.paths.data_path('photos', 'chelsea.png')))

    def get_snr_db(self):
        return self.snr_db

    def set_snr_db(self, snr_db):
        self.snr_db = snr_db
        self.set_noise_voltage(semcom.radio.packet.noise_voltage_for_snr(self.snr_db, self.modulation, self.samples_per_symbol))

    def get_samples_per_symbol(self):
        return self.samples_per_symbol

    def set_samples_per_symbol(self, samples_per_symbol):
        self.samples_per_symbol = samples_per_symbol
        self.set_noise_voltage(semcom.radio.packet.noise_voltage_for_snr(self.snr_db, self.modulation, self.samples_per_symbol))

    def get_modulation(self):
        return self.modulation

    def set_modulation(self, modulation):
        self.modulation = modulation
        self.set_noise_voltage(semcom.radio.packet.noise_voltage_for_snr(self.snr_db, self.modulation, self.samples_per_symbol))

    def get_timing_offset(self):
        return self.timing_offset

    def set_timing_offset(self, timing_offset):
        self.timing_offset = timing_offset
        self.channels_channel_model_0.set_timing_offset(self.timing_offset)

    def get_samp_rate(self):
        return self.samp_rate

    def set_samp_rate(self, samp_rate):
        self.samp_rate = samp_rate
        self.blocks_throttle_0.set_sample_rate(self.samp_rate)
        self.qtgui_freq_sink_x_0.set_frequency_range(0, self.samp_rate)

    def get_noise_voltage(self):
        return self.noise_voltage

    def set_noise_voltage(self, noise_voltage):
        self.noise_voltage = noise_voltage
        self.channels_channel_model_0.set_noise_voltage(self.noise_voltage)

    def get_image_file(self):
        return self.image_file

    def set_image_file(self, image_file):
        self.image_file = image_file
        self.blocks_message_strobe_0.set_msg(pmt.intern(self.image_file))

    def get_freq_offset(self):
        return self.freq_offset

    def set_freq_offset(self, freq_offset):
        self.freq_offset = freq_offset
        self.channels_channel_model_0.set_frequency_offset(self.freq_offset)

    def get_fec_code(self):
        return self.fec_code

    def set_fec_code(self, fec_code):
        self.fec_code = fec_code



def argument_parser():
    description = 'Live loopback: semantic_tx -> packet_tx -> channel model -> semantic receiver -> image display; the image is resent every 4 s, the SNR slider sets the channel noise while it runs'
    parser = ArgumentParser(description=description)
    parser.add_argument(
        "--image-path", dest="image_path", type=str, default='',
        help="Set Image (empty: bundled chelsea.png) [default=%(default)r]")
    return parser


def main(top_block_cls=loopback_gui, options=None):
    if options is None:
        options = argument_parser().parse_args()

    if StrictVersion("4.5.0") <= StrictVersion(Qt.qVersion()) < StrictVersion("5.0.0"):
        style = gr.prefs().get_string('qtgui', 'style', 'raster')
        Qt.QApplication.setGraphicsSystem(style)
    qapp = Qt.QApplication(sys.argv)

    tb = top_block_cls(image_path=options.image_path)

    tb.start()

    tb.show()

    def sig_handler(sig=None, frame=None):
        tb.stop()
        tb.wait()

        Qt.QApplication.quit()

    signal.signal(signal.SIGINT, sig_handler)
    signal.signal(signal.SIGTERM, sig_handler)

    timer = Qt.QTimer()
    timer.start(500)
    timer.timeout.connect(lambda: None)

    qapp.exec_()

if __name__ == '__main__':
    main()
