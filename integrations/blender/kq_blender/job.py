"""What the kq add-on submits, as plain Python (no bpy): tested without Blender."""
import os
import re

# Placeholders kq fills in a job's arguments; a file path holding one would be rewritten by kq.
_PLACEHOLDER = re.compile(r"\{(frame|start|end)(:0?\d+)?\}")


class SubmitRefused(Exception):
    """The scene cannot be sent to the farm as it is; the message says what to do."""


def frame_range(start, end, step=1):
    """kq's frame range for Blender's start/end/step: "1-250", "7", "1-250x5"."""
    start, end, step = int(start), int(end), max(1, int(step))
    if end < start:
        raise SubmitRefused("the end frame (%d) is before the start frame (%d)" % (end, start))
    if start == end:
        return str(start)
    return "%d-%d" % (start, end) + ("x%d" % step if step > 1 else "")


def render_command(blender, blend_file, engine, scene=None):
    """`blender -b FILE -E ENGINE -s {start} -e {end} -a`: each task renders its chunk with the file's own
    output settings (`-S SCENE` too when the file has several scenes, so the one on screen is rendered)."""
    return [blender, "-b", blend_file] + (["-S", scene] if scene else []) + ["-E", engine, "-s", "{start}", "-e", "{end}", "-a"]


def output_pattern(path_for_frame):
    """kq's output pattern from Blender's frame_path(frame=N): the frame number becomes {frame:0W}.

    path_for_frame(1) is e.g. "/shots/out/f_0001.png" and path_for_frame(7777777) "/shots/out/f_7777777.png";
    what they share before and after the number is kept and the number's width gives the padding.
    Returns None when the frame number does not appear in the path (a movie, or no # and no number).
    """
    one = path_for_frame(1)
    big = path_for_frame(7777777)
    at = big.rfind("7777777")
    if at < 0:
        return None
    prefix, suffix = big[:at], big[at + 7:]
    if not (one.startswith(prefix) and one.endswith(suffix)):
        return None
    digits = one[len(prefix):len(one) - len(suffix)]
    if not digits.isdigit() or int(digits) != 1:
        return None
    return "%s{frame:0%d}%s" % (prefix, len(digits), suffix)


def job_name(blend_file, frames, scene_name=None):
    """"shot.blend 1-250" (with the scene when the file has several: "shot.blend [Scene.001] 1-250")."""
    base = os.path.basename(blend_file)
    return "%s%s %s" % (base, " [%s]" % scene_name if scene_name else "", frames)


def check_file(filepath, is_dirty, save_first):
    """Refuse what the farm cannot render as the artist sees it: an unsaved file, or unsaved changes."""
    if not filepath:
        raise SubmitRefused("kq renders the .blend file on disk: save it first (File > Save As)")
    if _PLACEHOLDER.search(filepath):
        raise SubmitRefused("the file's path %s contains {frame}, {start} or {end}, which kq would replace: "
                            "save it under another name" % filepath)
    if is_dirty and not save_first:
        raise SubmitRefused("the file has unsaved changes, and the farm renders what is on disk: save it (Ctrl+S), "
                            "or tick \"Save before submitting\" in the kq panel")


def check_output(is_movie, pattern):
    if is_movie:
        raise SubmitRefused("the scene writes a movie, which kq cannot split into chunks of frames: choose an image "
                            "format (PNG, OpenEXR...) in Output Properties and join the frames afterwards")
    if pattern is None:
        raise SubmitRefused("cannot tell where Blender writes each frame: set an output path in Output Properties")
    if len(_PLACEHOLDER.findall(pattern)) != 1:  # the {frame:0W} output_pattern put there, and nothing else
        raise SubmitRefused("the output path %s contains {frame}, {start} or {end}: rename it" % pattern)


def submission(blender, blend_file, engine, start, end, step, chunk, priority, name, output_for_frame, is_movie, scene=None):
    """The keyword arguments of KqClient.submit for rendering this file's frames start..end."""
    frames = frame_range(start, end, step)
    pattern = output_pattern(output_for_frame)
    check_output(is_movie, pattern)
    return {
        "argv": render_command(blender, blend_file, engine, scene),
        "frames": frames,
        "chunk": int(chunk),
        "priority": int(priority),
        "name": name.strip() if name and name.strip() else job_name(blend_file, frames, scene),
        "cwd": os.path.dirname(blend_file),
        "output": pattern,
    }
