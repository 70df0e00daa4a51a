"""kq_katana without Katana: python3 -m unittest discover -s integrations/katana/tests"""
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from kq_katana import commands  # noqa: E402
from kq_katana.frames import FrameRangeError, contiguous, kq_frames, parse_frames  # noqa: E402


class Frames(unittest.TestCase):
    def test_ranges_steps_lists(self):
        self.assertEqual(parse_frames("1-5"), [1, 2, 3, 4, 5])
        self.assertEqual(parse_frames(" 1-10x3 "), [1, 4, 7, 10])
        self.assertEqual(parse_frames("12"), [12])
        self.assertEqual(parse_frames("1-3, 10, 2"), [1, 2, 3, 10])
        self.assertEqual(parse_frames("-2-1"), [-2, -1, 0, 1])

    def test_bad_ranges_say_why(self):
        for text, why in (("", "no frames given"), ("5-1", "end frame is before"), ("1-10x0", "step must be"),
                          ("a-b", "is not a frame range"), ("1-2000000", "more than")):
            with self.assertRaisesRegex(FrameRangeError, why):
                parse_frames(text)

    def test_kq_frames_joins_runs(self):
        self.assertEqual(kq_frames([1, 2, 3, 5, 7, 8]), "1-3, 5, 7-8")
        self.assertEqual(kq_frames([4]), "4")
        self.assertTrue(contiguous([3, 1, 2]))
        self.assertFalse(contiguous([1, 3]))


class Commands(unittest.TestCase):
    def test_renderboot_frame_becomes_the_placeholder(self):
        args = ["-renderer", "arnold", "-geolib3OpTree", "/tmp/k/op.optree", "-frame", "7", "-threads", "8"]
        self.assertEqual(commands.renderboot_command("/opt/Katana/bin/renderboot", args),
                         ["/opt/Katana/bin/renderboot", "-renderer", "arnold", "-geolib3OpTree", "/tmp/k/op.optree",
                          "-frame", "{frame}", "-threads", "8"])
        self.assertEqual(commands.renderboot_command("renderboot", ["--frame=3", "-x"]), ["renderboot", "--frame={frame}", "-x"])
        self.assertEqual(commands.renderboot_command("renderboot", ["-renderer", "dl"]), ["renderboot", "-renderer", "dl", "-frame", "{frame}"])

    def test_batch_command(self):
        self.assertEqual(commands.batch_command("katana", "/shots/s.katana", "Render_beauty"),
                         ["katana", "--batch", "--katana-file=/shots/s.katana", "--render-node=Render_beauty", "-t", "{start}-{end}"])
        with self.assertRaisesRegex(ValueError, "not saved"):
            commands.batch_command("katana", "", "Render")
        with self.assertRaisesRegex(ValueError, "select a Render node"):
            commands.batch_command("katana", "/s.katana", "")

    def test_placeholders_in_katanas_values_are_refused(self):
        # kq replaces {frame}, {start}, {end} (also zero-padded, {frame:04}) anywhere in a job's argv.
        for bad in ("/shots/{frame}/s.katana", "/s_{start}.katana", "/s{end}.katana", "/s.{frame:04}.katana"):
            with self.assertRaisesRegex(ValueError, r"contains \{frame\}, \{start\} or \{end\}, which kq would replace"):
                commands.batch_command("katana", bad, "Render")
        with self.assertRaisesRegex(ValueError, "Render node name Render_{frame}"):
            commands.batch_command("katana", "/s.katana", "Render_{frame}")
        with self.assertRaisesRegex(ValueError, "which kq would replace"):
            commands.batch_command("katana", "/s.katana", "Render", ["--var={end}"])
        with self.assertRaisesRegex(ValueError, "which kq would replace"):
            commands.renderboot_command("renderboot", ["-geolib3OpTree", "/tmp/{start}/op.optree", "-frame", "1"])
        with self.assertRaisesRegex(ValueError, "which kq would replace"):
            commands.renderboot_command("/opt/{frame}/renderboot", ["-frame", "1"])
        # Braces that are not kq's placeholders are fine.
        self.assertEqual(commands.batch_command("katana", "/s/{shot}.katana", "R{1}")[2:4],
                         ["--katana-file=/s/{shot}.katana", "--render-node=R{1}"])

    def test_job_names(self):
        self.assertEqual(commands.job_name("/shots/sh010.katana", "Render_beauty", "Disk Render", "1-100"),
                         "sh010.katana Render_beauty Disk Render 1-100")
        self.assertEqual(commands.job_name(None, "Merge1", "Preview Render", "5"), "untitled Merge1 Preview Render 5")


if __name__ == "__main__":
    unittest.main()
