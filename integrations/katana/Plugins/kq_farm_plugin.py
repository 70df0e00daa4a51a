"""kq as a Katana render farm (FarmAPI.BaseFarmPlugin): "kq > Preview Render" on any 3D node, Disk Render of
a Render node, the job list, render logs, stop and restart -- all through kq_client (integrations/python).

THIN LAYER, NOT RUN IN KATANA (Katana is not available where kq is developed and tested). Everything with
logic lives in kq_katana/ and is tested; this file only maps Katana's objects onto it. The names it relies
on are listed in KATANA_NAMES_ASSUMED below: check them against $KATANA_ROOT's FarmAPI.BaseFarmPlugin and
the Katana Queue plug-in Katana ships as source before first use (integrations/katana/README.md).
"""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
for _path in (os.path.join(_HERE, ".."), os.path.join(_HERE, "..", "..", "python")):
    if _path not in sys.path:
        sys.path.append(_path)

import kq_client  # noqa: E402
from kq_katana.farm import KqFarm  # noqa: E402
from kq_katana.frames import FrameRangeError  # noqa: E402

from Katana import FarmAPI, NodegraphAPI  # noqa: E402

KATANA_NAMES_ASSUMED = (
    "FarmAPI.BaseFarmPlugin methods: submitJob(jobRequest) -> job id, getJobs() -> ids, getJobState(jobId), "
    "getJobRenderLog(jobId), stopJob(jobId), restartJob(jobId)",
    "jobRequest: getRenderbootCommand() -> [renderboot, args...], getFrame(), getNodeName(), getRenderMethodType()",
    'PluginRegistry entry ("FarmPlugin", 2.0, "kq", KqFarmPlugin)',
    "NodegraphAPI.GetProjectFile(), GetAllSelectedNodes(), IsProjectDirty() (skipped when absent)",
)

# The frame range the kq tab's "Frames" field holds; empty: the frame Katana asked for.
settings = {"frames": "", "priority": 0, "chunk": 1}


def _farm():
    return KqFarm(kq_client.KqClient())


def _katana_file():
    return NodegraphAPI.GetProjectFile() or ""


def _renderboot_argv(job_request):
    """renderboot and its arguments, as Katana prepared them for this render."""
    getter = getattr(job_request, "getRenderbootCommand", None)
    if getter is None:
        raise RuntimeError("kq: this Katana's job request has no getRenderbootCommand(); it offers: %s -- "
                           "adapt _renderboot_argv() in %s" % (", ".join(n for n in dir(job_request) if not n.startswith("_")), __file__))
    command = list(getter())
    return command[0], command[1:]


class KqFarmPlugin(FarmAPI.BaseFarmPlugin):
    """Katana's farm interface over kq. Job ids are kq's, as strings."""

    def submitJob(self, jobRequest):
        renderboot, args = _renderboot_argv(jobRequest)
        frames = settings["frames"].strip() or str(jobRequest.getFrame())
        try:
            job = _farm().submit_preview(renderboot, args, frames, jobRequest.getNodeName(), katana_file=_katana_file(),
                                         priority=settings["priority"])
        except FrameRangeError as err:
            raise RuntimeError("kq: %s" % err)
        return str(job["id"])

    def getJobs(self):
        return _farm().job_ids()

    def getJobState(self, jobId):
        return _farm().state(jobId)

    def getJobRenderLog(self, jobId):
        return _farm().log(jobId)

    def stopJob(self, jobId):
        _farm().stop([jobId])

    def restartJob(self, jobId):
        _farm().restart([jobId])


def disk_render_selected(frames_text, chunk=1, priority=0, katana="katana"):
    """Disk Render of the selected Render node for a frame range (the kq tab's "Disk Render" button)."""
    nodes = [n for n in NodegraphAPI.GetAllSelectedNodes() if n.getType() == "Render"]
    if len(nodes) != 1:
        raise RuntimeError("kq: select one Render node to render to disk")
    if getattr(NodegraphAPI, "IsProjectDirty", lambda: False)():
        raise RuntimeError("kq: the project has unsaved changes, and the farm renders the file on disk: save it first")
    katana = os.path.join(os.environ["KATANA_ROOT"], "katana") if os.environ.get("KATANA_ROOT") else katana
    return _farm().submit_disk(katana, _katana_file(), nodes[0].getName(), frames_text, chunk=chunk, priority=priority)


PluginRegistry = [("FarmPlugin", 2.0, "kq", KqFarmPlugin)]
