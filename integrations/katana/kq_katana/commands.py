"""The command lines kq runs for Katana renders, and the job names the kq tab shows.

Preview Render: Katana prepares the render (an op tree file and renderboot's arguments); the farm runs Katana's
`renderboot` once per frame, as Katana's own farm plug-in (Katana Queue) runs it on its Agents. kq's `{frame}`
placeholder takes the place of the frame number, so one job covers the range, one renderboot per frame.

Disk Render: Katana's batch mode renders a Render node's outputs to disk for a frame range:
`katana --batch --katana-file=FILE --render-node=NODE -t START-END`, one chunk of frames per task.
"""
import os
import re

FRAME_FLAGS = ("-frame", "--frame")

# What kq replaces in a job's argv (src/common/placeholders.ts): {frame}, {start}, {end}, optionally {frame:04}.
_PLACEHOLDER = re.compile(r"\{(frame|start|end)(:0?\d+)?\}")


def refuse_placeholders(what, value):
    """A value from Katana (a path, a node name, an argument) must reach the command as it is."""
    if _PLACEHOLDER.search(value):
        raise ValueError("the %s %s contains {frame}, {start} or {end}, which kq would replace: rename it" % (what, value))
    return value


def renderboot_command(renderboot, args):
    """renderboot with Katana's arguments for one frame, its frame number replaced by kq's {frame}.

    args is what Katana passes renderboot (e.g. ["-renderer", "arnold", "-geolib3OpTree", "/tmp/x.optree",
    "-frame", "1", ...]); a missing -frame flag is added, since every task renders its own frame.
    """
    if not renderboot:
        raise ValueError("no renderboot program: is this Katana's Python? ($KATANA_ROOT/bin/renderboot)")
    argv = [refuse_placeholders("renderboot program", renderboot)]
    args = [refuse_placeholders("renderboot argument", str(a)) for a in args]
    i = 0
    replaced = False
    while i < len(args):
        a = args[i]
        if a in FRAME_FLAGS and i + 1 < len(args):
            argv += [a, "{frame}"]
            replaced = True
            i += 2
            continue
        if any(a.startswith(flag + "=") for flag in FRAME_FLAGS):
            argv.append(a.split("=", 1)[0] + "={frame}")
            replaced = True
        else:
            argv.append(a)
        i += 1
    if not replaced:
        argv += ["-frame", "{frame}"]
    return argv


def batch_command(katana, katana_file, render_node, extra_args=()):
    """Katana's batch render of a Render node for one chunk of frames (`-t {start}-{end}`)."""
    if not katana_file:
        raise ValueError("the project is not saved: kq renders the .katana file on disk (File > Save As)")
    if not render_node:
        raise ValueError("no Render node to render to disk: select a Render node")
    refuse_placeholders("Katana program", katana)
    refuse_placeholders("project file", katana_file)
    refuse_placeholders("Render node name", render_node)
    return [katana, "--batch", "--katana-file=%s" % katana_file, "--render-node=%s" % render_node,
            "-t", "{start}-{end}"] + [refuse_placeholders("Katana argument", str(a)) for a in extra_args]


def job_name(katana_file, node_name, kind, frames_text):
    """"shot010.katana Render_beauty Disk Render 1-100" (kind: "Preview Render" or "Disk Render")."""
    project = os.path.basename(katana_file) if katana_file else "untitled"
    return "%s %s %s %s" % (project, node_name, kind, frames_text)
