"""kq for Blender: send the saved .blend file to kq, the render queue, and follow the job from Render Properties.

The farm runs `blender -b FILE -E ENGINE -s {start} -e {end} -a`, one chunk of frames per task, with the
file's own output settings; kq shows the frames it writes as thumbnails. Everything that is not Blender UI
lives in job.py (plain Python, unit-tested) and kq_client.py (the shared kq client).
"""
bl_info = {
    "name": "kq render queue",
    "author": "kq",
    "version": (0, 1, 0),
    "blender": (3, 0, 0),
    "location": "Properties > Render > kq",
    "description": "Render the saved file's frames on kq, the render queue, and follow the job",
    "category": "Render",
}

import os
import shlex
import subprocess
import sys
import tempfile
import time
import webbrowser

import bpy
from bpy.props import BoolProperty, IntProperty, PointerProperty, StringProperty

from . import job as kq_job

try:
    from . import kq_client  # bundled into the add-on zip by `npm run blender-addon`
except ImportError:  # running from a kq checkout: integrations/python/kq_client.py
    sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
    import kq_client

# The job this Blender session submitted last, as kq last reported it. Kept out of the scene on purpose:
# writing it there would mark the file as changed after every submit.
_status = {"job_id": None, "name": "", "state": "", "progress": 0.0, "frames_done": 0, "frames_total": 0, "error": ""}
POLL_SECONDS = 2.0


def _prefs(context=None):
    context = context or bpy.context
    addon = context.preferences.addons.get(__name__)
    return addon.preferences if addon else None


def _client(context=None):
    prefs = _prefs(context)
    return kq_client.KqClient(data_root=(prefs.data_root.strip() or None) if prefs else None, timeout=10.0)


def _redraw():
    wm = getattr(bpy.context, "window_manager", None)
    for window in (wm.windows if wm else []):
        for area in window.screen.areas:
            if area.type == "PROPERTIES":
                area.tag_redraw()


def _poll_job():
    """A timer while a submitted job runs: keeps the panel's state and progress current."""
    job_id = _status["job_id"]
    if job_id is None:
        return None
    try:
        job = _client().show(job_id)
    except kq_client.KqError as err:
        _status["error"] = str(err)
        _redraw()
        return POLL_SECONDS * 3
    _status.update(state=job["state"], progress=job["progress"], frames_done=job["framesDone"],
                   frames_total=job["framesTotal"], name=job["name"], error="")
    _redraw()
    return None if job["state"] in kq_client.TERMINAL_STATES else POLL_SECONDS


def _follow(job_id, summary):
    _status.update(job_id=job_id, name=summary["name"], state=summary["state"], progress=summary.get("progress", 0.0),
                   frames_done=summary["framesDone"], frames_total=summary["framesTotal"], error="")
    if not bpy.app.background and not bpy.app.timers.is_registered(_poll_job):
        bpy.app.timers.register(_poll_job, first_interval=POLL_SECONDS, persistent=True)


def _frames(scene, settings):
    if settings.use_scene_range:
        return scene.frame_start, scene.frame_end
    return settings.frame_start, settings.frame_end


def _output_for(scene):
    return lambda frame: bpy.path.abspath(scene.render.frame_path(frame=frame))


class KqPreferences(bpy.types.AddonPreferences):
    bl_idname = __name__

    data_root: StringProperty(name="kq data root", subtype="DIR_PATH", default="",
                              description="kq's data root, whose kq.json says where kq listens (empty: KQ_DATA_ROOT, else ~/.local/share/kq)")
    blender_command: StringProperty(name="Blender on the farm", default="",
                                    description="The blender program the farm's agents run (empty: this Blender's own path)")
    kq_command: StringProperty(name="kq command", default="kq",
                               description="How to start kq from Blender (\"Start kq\"); it stops when Blender quits")

    def draw(self, context):
        for name in ("data_root", "blender_command", "kq_command"):
            self.layout.prop(self, name)


class KqSettings(bpy.types.PropertyGroup):
    use_scene_range: BoolProperty(name="Scene frame range", default=True, description="Render the scene's frame range")
    frame_start: IntProperty(name="Start", default=1)
    frame_end: IntProperty(name="End", default=250)
    chunk: IntProperty(name="Chunk", default=10, min=1, max=1000000, description="Frames per task (one Blender process each)")
    priority: IntProperty(name="Priority", default=0, min=-1000, max=1000, description="Higher runs first")
    job_name: StringProperty(name="Job name", default="", description="Empty: the file's name and the frames")
    save_first: BoolProperty(name="Save before submitting", default=False,
                             description="Save unsaved changes before submitting (otherwise a changed file is refused)")


class RENDER_OT_kq_submit(bpy.types.Operator):
    """Render the saved .blend file's frames on kq"""
    bl_idname = "render.kq_submit"
    bl_label = "Submit to kq"

    frame_start: IntProperty(name="Start", description="First frame (default: the panel's, i.e. the scene's range)")
    frame_end: IntProperty(name="End", description="Last frame (default: the panel's)")
    chunk: IntProperty(name="Chunk", min=1, max=1000000, default=10, description="Frames per task (default: the panel's)")
    priority: IntProperty(name="Priority", min=-1000, max=1000, description="Higher runs first (default: the panel's)")
    name: StringProperty(name="Job name", description="Default: the panel's, else the file's name and the frames")
    save_first: BoolProperty(name="Save first", description="Save unsaved changes first (default: the panel's)")

    def _option(self, name, fallback):
        return getattr(self.properties, name) if self.properties.is_property_set(name) else fallback

    def execute(self, context):
        scene = context.scene
        settings = scene.kq
        start, end = _frames(scene, settings)
        start = self._option("frame_start", start)
        end = self._option("frame_end", end)
        save_first = self._option("save_first", settings.save_first)
        prefs = _prefs(context)
        blender = (prefs.blender_command.strip() if prefs else "") or bpy.app.binary_path
        try:
            kq_job.check_file(bpy.data.filepath, bpy.data.is_dirty, save_first)
            if bpy.data.is_dirty:
                try:
                    bpy.ops.wm.save_mainfile()
                except RuntimeError as err:
                    raise kq_job.SubmitRefused("could not save %s first: %s" % (bpy.data.filepath, err))
            job = kq_job.submission(
                blender=blender, blend_file=bpy.path.abspath(bpy.data.filepath), engine=scene.render.engine,
                start=start, end=end, step=scene.frame_step,
                chunk=self._option("chunk", settings.chunk), priority=self._option("priority", settings.priority),
                name=self._option("name", settings.job_name), output_for_frame=_output_for(scene),
                is_movie=scene.render.is_movie_format, scene=scene.name if len(bpy.data.scenes) > 1 else None)
            submitted = _client(context).submit(**job)
        except (kq_job.SubmitRefused, kq_client.KqError) as err:
            if isinstance(err, kq_client.KqUnreachable):
                _status["error"] = str(err)  # the panel then offers "Start kq"
            self.report({"ERROR"}, "kq: %s" % err)
            return {"CANCELLED"}
        _follow(submitted["id"], submitted)
        self.report({"INFO"}, "kq: job %d submitted: %s (frames %s, chunk %d)" % (submitted["id"], submitted["name"], job["frames"], job["chunk"]))
        return {"FINISHED"}


class RENDER_OT_kq_open_monitor(bpy.types.Operator):
    """Open kq's web monitor at the job this Blender submitted last"""
    bl_idname = "render.kq_open_monitor"
    bl_label = "Open monitor"

    def execute(self, context):
        url = _client(context).monitor_url(_status["job_id"])
        if not webbrowser.open(url):
            self.report({"WARNING"}, "kq: no web browser found: open %s" % url)
        else:
            self.report({"INFO"}, "kq: opened %s" % url)
        return {"FINISHED"}


class RENDER_OT_kq_refresh(bpy.types.Operator):
    """Ask kq for the job's state now"""
    bl_idname = "render.kq_refresh"
    bl_label = "Refresh"

    def execute(self, context):
        if _status["job_id"] is not None and _poll_job() is not None and not bpy.app.background:
            if not bpy.app.timers.is_registered(_poll_job):
                bpy.app.timers.register(_poll_job, first_interval=POLL_SECONDS, persistent=True)
        return {"FINISHED"}


class RENDER_OT_kq_start(bpy.types.Operator):
    """Start kq on this machine; it stops (renders requeued) when this Blender quits"""
    bl_idname = "render.kq_start"
    bl_label = "Start kq"

    timeout: IntProperty(name="Timeout", default=20, min=1, description="Seconds to wait for kq to answer")

    def execute(self, context):
        prefs = _prefs(context)
        command = shlex.split(prefs.kq_command if prefs else "kq") + ["--exit-with", str(os.getpid())]
        if prefs and prefs.data_root.strip():
            command += ["--data-root", bpy.path.abspath(prefs.data_root.strip())]
        errors = os.path.join(tempfile.gettempdir(), "kq-blender-%d.log" % os.getpid())
        try:
            with open(errors, "w") as out:
                proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as err:
            self.report({"ERROR"}, "kq: cannot run %s (%s): install kq or set \"kq command\" in the add-on's preferences" % (command[0], err))
            return {"CANCELLED"}
        deadline = time.time() + self.timeout
        while time.time() < deadline:
            if proc.poll() is not None:
                with open(errors) as f:
                    self.report({"ERROR"}, "kq: kq exited (%d): %s" % (proc.returncode, f.read().strip()[-500:]))
                return {"CANCELLED"}
            try:
                _client(context).info()
                self.report({"INFO"}, "kq: started kq %d (it stops when Blender quits; its output: %s)" % (proc.pid, errors))
                return {"FINISHED"}
            except kq_client.KqError:
                time.sleep(0.2)
        self.report({"ERROR"}, "kq: kq %d did not answer within %ds: see %s" % (proc.pid, self.timeout, errors))
        return {"CANCELLED"}


class RENDER_PT_kq(bpy.types.Panel):
    bl_label = "kq"
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "render"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        scene = context.scene
        settings = scene.kq
        layout.use_property_split = True
        layout.prop(settings, "use_scene_range")
        row = layout.row(align=True)
        row.enabled = not settings.use_scene_range
        start, end = _frames(scene, settings)
        if settings.use_scene_range:
            row.label(text="Frames %d-%d" % (start, end))
        else:
            row.prop(settings, "frame_start")
            row.prop(settings, "frame_end")
        layout.prop(settings, "chunk")
        layout.prop(settings, "priority")
        layout.prop(settings, "job_name")
        pattern = kq_job.output_pattern(_output_for(scene))
        layout.label(text="Output: %s" % (pattern or "(a movie: choose an image format)"), icon="OUTPUT")
        layout.prop(settings, "save_first")
        layout.operator(RENDER_OT_kq_submit.bl_idname, icon="RENDER_ANIMATION")
        if _status["job_id"] is not None:
            box = layout.box()
            box.label(text="Job %d: %s" % (_status["job_id"], _status["name"]))
            box.label(text="%s, %.1f%% (%d/%d frames)" % (_status["state"], _status["progress"], _status["frames_done"], _status["frames_total"]))
            row = box.row()
            row.operator(RENDER_OT_kq_open_monitor.bl_idname, icon="URL")
            row.operator(RENDER_OT_kq_refresh.bl_idname, icon="FILE_REFRESH")
        else:
            layout.operator(RENDER_OT_kq_open_monitor.bl_idname, icon="URL")
        if _status["error"]:
            layout.label(text=_status["error"][:200], icon="ERROR")
        layout.operator(RENDER_OT_kq_start.bl_idname, icon="PLAY")


CLASSES = (KqPreferences, KqSettings, RENDER_OT_kq_submit, RENDER_OT_kq_open_monitor, RENDER_OT_kq_refresh, RENDER_OT_kq_start, RENDER_PT_kq)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.kq = PointerProperty(type=KqSettings)


def unregister():
    if bpy.app.timers.is_registered(_poll_job):
        bpy.app.timers.unregister(_poll_job)
    del bpy.types.Scene.kq
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
