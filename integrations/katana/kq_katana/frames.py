"""Frame ranges as a Katana artist types them ("1-100", "1-100x5", "12", "1-10, 20") checked before kq sees them."""
import re

_PART = re.compile(r"^\s*(-?\d+)\s*(?:-\s*(-?\d+)\s*(?:x\s*(\d+)\s*)?)?$")
MAX_FRAMES = 1000000


class FrameRangeError(ValueError):
    pass


def parse_frames(text):
    """The frames of a range, in order, without repeats. Raises FrameRangeError saying what is wrong."""
    text = (text or "").strip()
    if not text:
        raise FrameRangeError("no frames given: type a frame range such as 1-100 or 1-100x5")
    frames = []
    seen = set()
    for part in text.split(","):
        m = _PART.match(part)
        if not m:
            raise FrameRangeError('"%s" is not a frame range (examples: 1-100, 1-100x5, 12, 1-10, 20)' % part.strip())
        start = int(m.group(1))
        end = int(m.group(2)) if m.group(2) is not None else start
        step = int(m.group(3)) if m.group(3) is not None else 1
        if end < start:
            raise FrameRangeError('"%s": the end frame is before the start frame' % part.strip())
        if step < 1:
            raise FrameRangeError('"%s": the step must be at least 1' % part.strip())
        if (end - start) // step + 1 + len(frames) > MAX_FRAMES:
            raise FrameRangeError("more than %d frames" % MAX_FRAMES)
        for f in range(start, end + 1, step):
            if f not in seen:
                seen.add(f)
                frames.append(f)
    return frames


def kq_frames(frames):
    """kq's frame range text for a list of frames: runs of consecutive frames become "a-b"."""
    if not frames:
        raise FrameRangeError("no frames")
    parts = []
    ordered = sorted(set(frames))
    start = prev = ordered[0]
    for f in ordered[1:] + [None]:
        if f is not None and f == prev + 1:
            prev = f
            continue
        parts.append(str(start) if start == prev else "%d-%d" % (start, prev))
        if f is not None:
            start = prev = f
    return ", ".join(parts)


def contiguous(frames):
    """True when the frames are one run a, a+1, ..., b (what `katana --batch -t a-b` renders)."""
    ordered = sorted(set(frames))
    return bool(ordered) and ordered[-1] - ordered[0] + 1 == len(ordered)
