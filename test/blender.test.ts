/**
 * The kq_blender add-on in Debian's real headless Blender: installed from the zip `npm run blender-addon`
 * builds, enabled with --addons and BLENDER_USER_SCRIPTS, `bpy.ops.render.kq_submit` on a saved 4-frame
 * Cycles scene, and kq's agents render the frames with Blender.
 */
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, Kq, ROOT, cleanupAll, isRunning, tempDir, waitFor } from './helpers/kq.js';
import { readPng } from './helpers/png.js';

const kqs: Kq[] = [];
afterAll(() => cleanupAll(kqs));
let scripts = '';
let home = '';
let sceneTemplate = '';
let kq: Kq;

/** A tiny scene that renders fast: Cycles, 80×60, 4 samples, denoising off (Debian's Blender has no OpenImageDenoise). */
const MAKE_SCENE = `
import bpy, sys
s = bpy.context.scene
s.render.engine = 'CYCLES'
s.render.resolution_x, s.render.resolution_y, s.render.resolution_percentage = 80, 60, 100
s.cycles.samples = 4
s.cycles.use_denoising = False
s.frame_start, s.frame_end = 1, 4
s.render.image_settings.file_format = 'PNG'
s.render.filepath = '//frames/shot_####'
bpy.ops.wm.save_as_mainfile(filepath=sys.argv[-1])
`;

beforeAll(async () => {
  const work = tempDir('kq-blender-');
  home = path.join(work, 'home');
  fs.mkdirSync(home);
  // Install from the zip, as an artist would (Blender's installer unpacks it into <user scripts>/addons).
  const zip = path.join(work, 'kq_blender.zip');
  await execa('python3', [path.join(ROOT, 'integrations', 'blender', 'build_zip.py'), zip]);
  scripts = path.join(work, 'scripts');
  await execa('python3', ['-m', 'zipfile', '-e', zip, path.join(scripts, 'addons')]);
  sceneTemplate = path.join(work, 'template.blend');
  fs.writeFileSync(path.join(work, 'make_scene.py'), MAKE_SCENE);
  const made = await execa('blender', ['-b', '--factory-startup', '--python-exit-code', '1', '--python', path.join(work, 'make_scene.py'), '--', sceneTemplate],
    { env: { HOME: home }, reject: false, all: true });
  if (made.exitCode !== 0) throw new Error(`could not make the test scene: ${made.all}`);
  kq = await Kq.start({ numAgents: 2 });
  kqs.push(kq);
}, 120_000);

/** A shot directory of its own with the saved scene in it. */
function shot(): { dir: string; blend: string } {
  const dir = tempDir('kq-shot-');
  const blend = path.join(dir, 'shot.blend');
  fs.copyFileSync(sceneTemplate, blend);
  return { dir, blend };
}

/** Headless Blender with the add-on enabled; `expr` runs after the file is loaded. */
async function blender(file: string | null, expr: string, env: Record<string, string> = {}) {
  const r = await execa('blender', ['-b', ...(file ? [file] : []), '--addons', 'kq_blender', '--python-exit-code', '1', '--python-expr', `import bpy\n${expr}`], {
    env: { HOME: home, TMPDIR: tempDir('kq-blender-tmp-'), BLENDER_USER_SCRIPTS: scripts, KQ_DATA_ROOT: kq.dataRoot, ...env }, reject: false, all: true, timeout: 120_000,
  });
  return { exitCode: r.exitCode, all: String(r.all) };
}

const submittedId = (output: string) => {
  const m = /kq: job (\d+) submitted/.exec(output);
  if (!m) throw new Error(`no "kq: job N submitted" in Blender's output:\n${output}`);
  return Number(m[1]);
};

describe('kq_blender in headless Blender', () => {
  it("bpy.ops.render.kq_submit on a saved 4-frame Cycles scene: kq's agents render the 4 PNGs with Blender", async () => {
    const { dir, blend } = shot();
    const r = await blender(blend, `bpy.ops.render.kq_submit(chunk=2, priority=5, name='sh010 lighting')
panel = bpy.types.RENDER_PT_kq
print("panel %s/%s/%s" % (panel.bl_space_type, panel.bl_context, panel.bl_label))
# What the panel shows while Blender runs (its timer does not run headless: call it as the timer would).
import time, kq_blender
while kq_blender._poll_job() is not None:
    time.sleep(0.5)
print("panel status: %(state)s %(progress).1f%% %(frames_done)d/%(frames_total)d" % kq_blender._status)`);
    expect(r.exitCode, r.all).toBe(0);
    expect(r.all).toContain('panel PROPERTIES/render/kq'); // the "kq" panel in Render Properties
    expect(r.all).toContain('panel status: Completed 100.0% 4/4');
    const id = submittedId(r.all);
    const job = await kq.waitJob(id, 120_000);
    expect(job.state, (await kq.ctl('log', String(id))).stdout).toBe('Completed');
    expect(job).toMatchObject({
      name: 'sh010 lighting', priority: 5, frameSpec: '1-4', chunk: 2, framesDone: 4, framesTotal: 4, cwd: dir,
      argv: ['/usr/bin/blender', '-b', blend, '-E', 'CYCLES', '-s', '{start}', '-e', '{end}', '-a'],
      output: path.join(dir, 'frames', 'shot_{frame:04}.png'),
    });
    expect(job.taskList.map((t: any) => t.frames)).toEqual([[1, 2], [3, 4]]);
    const frames = fs.readdirSync(path.join(dir, 'frames')).sort();
    expect(frames).toEqual(['shot_0001.png', 'shot_0002.png', 'shot_0003.png', 'shot_0004.png']);
    for (const f of frames) expect(readPng(path.join(dir, 'frames', f))).toEqual({ width: 80, height: 60 });
    const log = (await kq.ctl('log', String(id))).stdout;
    expect(log).toContain('Blender 3.');
    expect(log.match(/^(\[t\d+ f[\d-]+\] )?Saved: '.*shot_000\d\.png'$/gm)).toHaveLength(4); // a job of several tasks: lines carry [tN fA-B]
    // The monitor shows the frames Blender wrote.
    const thumb = await fetch(`${kq.info.httpUrl}api/jobs/${id}/output?frame=3`);
    expect(thumb.status).toBe(200);
    expect(thumb.headers.get('content-type')).toBe('image/png');
    expect(Buffer.from(await thumb.arrayBuffer()).equals(fs.readFileSync(path.join(dir, 'frames', 'shot_0003.png')))).toBe(true);
  }, 180_000);

  it('refuses an unsaved file and one with unsaved changes, saying what to do; saves first when asked', async () => {
    const unsaved = await blender(null, 'bpy.ops.render.kq_submit()');
    expect(unsaved.exitCode).toBe(1);
    expect(unsaved.all).toContain('kq: kq renders the .blend file on disk: save it first (File > Save As)');

    const { blend } = shot();
    const before = (await kq.json('list')).length;
    const dirty = await blender(blend, "bpy.context.scene.frame_end = 2\nbpy.ops.ed.undo_push(message='edit')\nbpy.ops.render.kq_submit()");
    expect(dirty.exitCode).toBe(1);
    expect(dirty.all).toContain('kq: the file has unsaved changes, and the farm renders what is on disk: save it (Ctrl+S), or tick "Save before submitting" in the kq panel');
    expect((await kq.json('list')).length).toBe(before);

    const saved = await blender(blend, "bpy.context.scene.frame_end = 2\nbpy.ops.ed.undo_push(message='edit')\nbpy.context.scene.kq.save_first = True\nbpy.ops.render.kq_submit()");
    expect(saved.exitCode, saved.all).toBe(0);
    const id = submittedId(saved.all);
    expect((await kq.json('show', String(id))).frameSpec).toBe('1-2'); // the saved change is what the farm renders
    await kq.ctl('stop', String(id));
    const reread = await blender(blend, 'print("frame_end=%d" % bpy.context.scene.frame_end)');
    expect(reread.all, reread.all).toContain('frame_end=2');
  }, 120_000);

  it('kq not running: the error says how to start kq; "Open monitor" opens the page at the job', async () => {
    const { blend } = shot();
    const nowhere = tempDir('kq-nowhere-');
    fs.writeFileSync(path.join(nowhere, 'kq.json'), JSON.stringify({ httpUrl: 'http://127.0.0.1:9/', httpPort: 9 }));
    const down = await blender(blend, 'bpy.ops.render.kq_submit()', { KQ_DATA_ROOT: nowhere });
    expect(down.exitCode).toBe(1);
    expect(down.all).toMatch(/kq: cannot reach kq at http:\/\/127\.0\.0\.1:9\/ \(connection refused; address from .*kq\.json\): is kq running\? start it with `kq`/);

    const opened = path.join(tempDir('kq-browser-'), 'url');
    const browser = path.join(path.dirname(opened), 'browser');
    fs.writeFileSync(browser, `#!/bin/sh\nprintf '%s' "$1" > '${opened}.tmp' && mv '${opened}.tmp' '${opened}'\n`, { mode: 0o755 });
    const r = await blender(blend, 'bpy.ops.render.kq_submit(name="to open", frame_start=1, frame_end=1)\nbpy.ops.render.kq_open_monitor()', { BROWSER: browser });
    expect(r.exitCode, r.all).toBe(0);
    const id = submittedId(r.all);
    await kq.ctl('stop', String(id));
    expect(await waitFor('the browser to be asked', () => fs.existsSync(opened) && fs.readFileSync(opened, 'utf8'))).toBe(`${kq.info.httpUrl}#job=${id}`);
  }, 120_000);

  it('"Start kq" runs kq tied to this Blender (--exit-with): the job renders, and kq stops when Blender quits', async () => {
    const { dir, blend } = shot();
    const dataRoot = path.join(tempDir('kq-from-blender-'), 'data root');
    const kqCommand = `node ${BIN.kq} --num-agents 2 --request-port 0 --update-port 0 --broadcast-port 0 --http-port 0`;
    const r = await blender(blend, `
import addon_utils, kq_blender
addon_utils.enable('kq_blender', default_set=True)  # --addons loads it without an entry in Preferences
prefs = bpy.context.preferences.addons['kq_blender'].preferences
prefs.kq_command = ${JSON.stringify(kqCommand)}
prefs.data_root = ${JSON.stringify(dataRoot)}
bpy.ops.render.kq_start()
bpy.ops.render.kq_submit(chunk=4)
client = kq_blender._client()
print("kq pid %d" % client.info()["pid"])
job = client.wait(kq_blender._status["job_id"], poll=0.2, timeout=100)
print("job ended %s %d/%d" % (job["state"], job["framesDone"], job["framesTotal"]))`, { KQ_DATA_ROOT: '' });
    expect(r.exitCode, r.all).toBe(0);
    expect(r.all).toContain('job ended Completed 4/4');
    const kqPid = Number(/kq pid (\d+)/.exec(r.all)![1]);
    await waitFor('kq to stop after Blender quit', () => !isRunning(kqPid), 30_000);
    expect(fs.existsSync(path.join(dataRoot, 'kq.json'))).toBe(false);
    expect(fs.readdirSync(path.join(dir, 'frames'))).toHaveLength(4);
  }, 180_000);
});
