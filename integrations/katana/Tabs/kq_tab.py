"""The "kq" tab: kq's jobs (Id, Name, State, Progress, Submitted, Completed, Log File), the selected job's render
log, Stop and Restart, and the frame range for renders of the selected node -- the seed's Katana Queue tab.

THIN LAYER, NOT RUN IN KATANA: the rows, log and actions come from kq_katana.farm.KqFarm (tested against a
real kq); this file is Qt widgets only. UI4.Tabs.BaseTab and the ("KatanaPanel", 2.0, name, class) registry
entry are Katana's documented way to add a tab.
"""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
for _path in (os.path.join(_HERE, ".."), os.path.join(_HERE, "..", "..", "python"), os.path.join(_HERE, "..", "Plugins")):
    if _path not in sys.path:
        sys.path.append(_path)

import kq_client  # noqa: E402
from kq_katana.farm import KqFarm, TAB_COLUMNS  # noqa: E402

from Katana import QtCore, QtWidgets, UI4  # noqa: E402

REFRESH_MS = 2000


class KqTab(UI4.Tabs.BaseTab):
    def __init__(self, parent):
        UI4.Tabs.BaseTab.__init__(self, parent)
        self.farm = KqFarm(kq_client.KqClient())
        layout = QtWidgets.QVBoxLayout(self)

        render_row = QtWidgets.QHBoxLayout()
        render_row.addWidget(QtWidgets.QLabel("Frames"))
        self.frames = QtWidgets.QLineEdit()
        self.frames.setPlaceholderText("e.g. 1-100 (empty: the current frame)")
        render_row.addWidget(self.frames)
        render_row.addWidget(QtWidgets.QLabel("Chunk"))
        self.chunk = QtWidgets.QSpinBox()
        self.chunk.setRange(1, 100000)
        render_row.addWidget(self.chunk)
        self.disk = QtWidgets.QPushButton("Disk Render selected")
        self.disk.clicked.connect(self._disk_render)
        render_row.addWidget(self.disk)
        layout.addLayout(render_row)

        self.table = QtWidgets.QTableWidget(0, len(TAB_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(TAB_COLUMNS))
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectRows)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.NoEditTriggers)
        self.table.itemSelectionChanged.connect(self._show_log)
        layout.addWidget(self.table)

        buttons = QtWidgets.QHBoxLayout()
        for label, action in (("Stop", self._stop), ("Restart", self._restart), ("Refresh", self.refresh)):
            button = QtWidgets.QPushButton(label)
            button.clicked.connect(action)
            buttons.addWidget(button)
        self.status = QtWidgets.QLabel("")
        buttons.addWidget(self.status, 1)
        layout.addLayout(buttons)

        self.log = QtWidgets.QPlainTextEdit()
        self.log.setReadOnly(True)
        layout.addWidget(self.log)

        self.frames.textChanged.connect(self._frames_changed)
        self.timer = QtCore.QTimer(self)
        self.timer.timeout.connect(self.refresh)
        self.timer.start(REFRESH_MS)
        self.refresh()

    def _selected_ids(self):
        return sorted({int(self.table.item(i.row(), 0).text()) for i in self.table.selectedIndexes()})

    def _report(self, err):
        self.status.setText(str(err))

    def refresh(self):
        try:
            rows = self.farm.jobs()
        except kq_client.KqError as err:
            return self._report(err)
        selected = self._selected_ids()
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                self.table.setItem(r, c, QtWidgets.QTableWidgetItem(str(value)))
        self.status.setText("%d job(s)" % len(rows))
        if len(selected) == 1:
            self._show_log()

    def _show_log(self):
        ids = self._selected_ids()
        if len(ids) != 1:
            return
        try:
            text = self.farm.log(ids[0])
        except kq_client.KqError as err:
            return self._report(err)
        if text != self.log.toPlainText():
            self.log.setPlainText(text)
            bar = self.log.verticalScrollBar()
            bar.setValue(bar.maximum())

    def _stop(self):
        ids = self._selected_ids()
        if ids:
            try:
                self.farm.stop(ids)
            except kq_client.KqError as err:
                self._report(err)
            self.refresh()

    def _restart(self):
        ids = self._selected_ids()
        if ids:
            try:
                self.farm.restart(ids)
            except kq_client.KqError as err:
                self._report(err)
            self.refresh()

    def _frames_changed(self, text):
        import kq_farm_plugin  # the farm plug-in reads the range when Katana asks it to submit
        kq_farm_plugin.settings["frames"] = text
        kq_farm_plugin.settings["chunk"] = self.chunk.value()

    def _disk_render(self):
        import kq_farm_plugin
        try:
            job = kq_farm_plugin.disk_render_selected(self.frames.text(), chunk=self.chunk.value())
            self.status.setText("kq: job %d submitted" % job["id"])
        except Exception as err:  # shown in the tab: an artist's mistake must not raise into Katana
            self._report(err)
        self.refresh()


PluginRegistry = [("KatanaPanel", 2.0, "kq", KqTab)]
