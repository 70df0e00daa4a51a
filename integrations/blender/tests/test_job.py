"""kq_blender/job.py without Blender: python3 -m unittest discover -s integrations/blender/tests"""
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "kq_blender"))
import job  # noqa: E402  (plain Python: importing the package would need bpy)


def blender_frame_path(template, ext=".png"):
    """Blender's frame_path: the last run of # becomes the frame, padded to its length; no # appends 4 digits."""
    def frame_path(frame):
        head, hashes, tail = template, "", ""
        at = template.rfind("#")
        if at >= 0:
            start = at
            while start > 0 and template[start - 1] == "#":
                start -= 1
            head, hashes, tail = template[:start], template[start:at + 1], template[at + 1:]
        return head + str(frame).zfill(len(hashes) or 4) + tail + ext
    return frame_path


class FrameRange(unittest.TestCase):
    def test_ranges(self):
        self.assertEqual(job.frame_range(1, 250), "1-250")
        self.assertEqual(job.frame_range(7, 7), "7")
        self.assertEqual(job.frame_range(1, 100, 5), "1-100x5")
        self.assertEqual(job.frame_range(-10, 10), "-10-10")

    def test_end_before_start(self):
        with self.assertRaisesRegex(job.SubmitRefused, r"the end frame \(3\) is before the start frame \(5\)"):
            job.frame_range(5, 3)


class OutputPattern(unittest.TestCase):
    def test_hashes_give_the_padding(self):
        self.assertEqual(job.output_pattern(blender_frame_path("/shots/out/f_####")), "/shots/out/f_{frame:04}.png")
        self.assertEqual(job.output_pattern(blender_frame_path("/shots/out/f_##_beauty")), "/shots/out/f_{frame:02}_beauty.png")

    def test_no_hashes_means_four_digits_appended(self):
        self.assertEqual(job.output_pattern(blender_frame_path("/tmp/render_", ".exr")), "/tmp/render_{frame:04}.exr")

    def test_a_path_without_the_frame_number(self):
        self.assertIsNone(job.output_pattern(lambda frame: "/tmp/movie.mp4"))

    def test_movie_and_placeholders_refused(self):
        with self.assertRaisesRegex(job.SubmitRefused, "writes a movie"):
            job.check_output(True, None)
        with self.assertRaisesRegex(job.SubmitRefused, "contains {frame}"):
            job.check_output(False, "/shots/{start}/f_{frame:04}.png")


class CheckFile(unittest.TestCase):
    def test_unsaved_and_dirty(self):
        with self.assertRaisesRegex(job.SubmitRefused, r"save it first \(File > Save As\)"):
            job.check_file("", False, False)
        with self.assertRaisesRegex(job.SubmitRefused, "unsaved changes"):
            job.check_file("/shots/a.blend", True, False)
        job.check_file("/shots/a.blend", True, True)
        job.check_file("/shots/a.blend", False, False)

    def test_placeholder_in_file_name(self):
        with self.assertRaisesRegex(job.SubmitRefused, "contains {frame}"):
            job.check_file("/shots/{frame}.blend", False, False)


class Submission(unittest.TestCase):
    def test_the_job(self):
        s = job.submission("/opt/blender/blender", "/shots/sh010/light.blend", "CYCLES", 1, 100, 1, 10, 5, "",
                           blender_frame_path("/shots/sh010/frames/f_####"), False)
        self.assertEqual(s, {
            "argv": ["/opt/blender/blender", "-b", "/shots/sh010/light.blend", "-E", "CYCLES", "-s", "{start}", "-e", "{end}", "-a"],
            "frames": "1-100", "chunk": 10, "priority": 5, "name": "light.blend 1-100", "cwd": "/shots/sh010",
            "output": "/shots/sh010/frames/f_{frame:04}.png",
        })

    def test_several_scenes_name_the_scene(self):
        s = job.submission("blender", "/s/a.blend", "BLENDER_EEVEE", 3, 3, 1, 1, 0, "  my job ",
                           blender_frame_path("/s/f_####"), False, scene="Scene.001")
        self.assertEqual(s["argv"][:5], ["blender", "-b", "/s/a.blend", "-S", "Scene.001"])
        self.assertEqual(s["name"], "my job")
        self.assertEqual(job.job_name("/s/a.blend", "1-4", "Scene.001"), "a.blend [Scene.001] 1-4")


if __name__ == "__main__":
    unittest.main()
