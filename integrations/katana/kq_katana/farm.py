"""KqFarm: what the kq farm plug-in and the kq tab do, in plain Python over kq_client (no Katana needed)."""
import os

from . import commands
from .frames import contiguous, kq_frames, parse_frames

# kq's job states are Katana Queue's: Waiting, Running, Completed, Cancelled, Failed.
JOB_STATES = ("Waiting", "Blocked", "Running", "Completed", "Cancelled", "Failed")
TAB_COLUMNS = ("Id", "Name", "State", "Progress", "Submitted", "Completed", "Log File")


class KqFarm(object):
    def __init__(self, client):
        self.client = client

    def submit_preview(self, renderboot, renderboot_args, frames_text, node_name, katana_file=None, cwd=None,
                       env=None, priority=0):
        """Preview Render of a 3D node for a frame range: one renderboot per frame."""
        frames = parse_frames(frames_text)
        argv = commands.renderboot_command(renderboot, renderboot_args)
        spec = kq_frames(frames)
        return self.client.submit(argv, frames=spec, chunk=1, priority=priority, env=env,
                                  cwd=cwd or (os.path.dirname(katana_file) if katana_file else None),
                                  name=commands.job_name(katana_file, node_name, "Preview Render", spec))

    def submit_disk(self, katana, katana_file, render_node, frames_text, chunk=1, priority=0, env=None, output=None):
        """Disk Render of a Render node for a frame range, in chunks of frames (one katana --batch each)."""
        frames = parse_frames(frames_text)
        if not contiguous(frames) and chunk > 1:
            # `-t {start}-{end}` renders every frame between: a chunk must not span a gap.
            chunk = 1
        argv = commands.batch_command(katana, katana_file, render_node)
        spec = kq_frames(frames)
        return self.client.submit(argv, frames=spec, chunk=chunk, priority=priority, env=env,
                                  cwd=os.path.dirname(katana_file), output=output,
                                  name=commands.job_name(katana_file, render_node, "Disk Render", spec))

    def jobs(self):
        """The kq tab's rows, newest first: (id, name, state, progress, submitted, completed, log file)."""
        rows = []
        for job in reversed(self.client.list()):
            progress = "%d/%d" % (job["framesDone"], job["framesTotal"]) if job["framesTotal"] else "%d%%" % job["progress"]
            rows.append((job["id"], job["name"], job["state"], progress, _when(job["submittedAt"]),
                         _when(job.get("completedAt")), job["logFile"]))
        return rows

    def job_ids(self):
        return [str(job["id"]) for job in self.client.list()]

    def state(self, job_id):
        return self.client.show(job_id)["state"]

    def log(self, job_id):
        return self.client.log(job_id)

    def stop(self, job_ids):
        return self.client.stop(job_ids)

    def restart(self, job_ids, failed_only=False):
        return self.client.restart(job_ids, failed_only=failed_only)


def _when(iso):
    """"2026-11-25T16:31:00.216Z" -> "2026-11-25 16:31:00" (UTC)."""
    if not iso:
        return ""
    return iso.replace("T", " ")[:19]
