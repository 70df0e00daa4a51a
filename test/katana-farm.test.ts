/**
 * The Katana plug-in's plain-Python core (integrations/katana/kq_katana) against a real kq. Katana is not
 * here: `renderboot` and `katana` are stand-in scripts that take the same command lines and print the same
 * kind of progress, so what is tested is the command building, frame ranges, naming and the farm tab's data.
 */
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Kq, ROOT, cleanupAll, tempDir, waitFor } from './helpers/kq.js';

const kqs: Kq[] = [];
let kq: Kq;
let bin = '';
beforeAll(async () => {
  kq = await Kq.start({ numAgents: 2 });
  kqs.push(kq);
  bin = tempDir('kq-katana-bin-');
  // renderboot: renders the frame after -frame, with renderboot-style "NN% done" progress.
  fs.writeFileSync(path.join(bin, 'renderboot'), `#!/bin/sh
frame=""; while [ $# -gt 0 ]; do [ "$1" = "-frame" ] && frame="$2"; shift; done
[ -f "$PWD/hang" ] && exec sleep 60
for p in 25 50 75 100; do echo "[INFO] $p% done"; done
echo "frame $frame" > "preview_$frame.txt"
`, { mode: 0o755 });
  // katana --batch: renders -t START-END of the Render node to disk.
  fs.writeFileSync(path.join(bin, 'katana'), `#!/bin/sh
echo "katana $*" >> batch_calls.txt
for a in "$@"; do case "$a" in *-*) range="$a";; esac; done
start=\${range%-*}; end=\${range#*-}; f=$start
while [ $f -le $end ]; do echo "disk $f" > "disk_$f.txt"; f=$((f+1)); done
`, { mode: 0o755 });
}, 60_000);
afterAll(() => cleanupAll(kqs));

async function py(script: string) {
  const r = await execa('python3', ['-c', `import json, sys\nsys.path[:0] = [${JSON.stringify(path.join(ROOT, 'integrations', 'katana'))}, ${JSON.stringify(path.join(ROOT, 'integrations', 'python'))}]
import kq_client
from kq_katana.farm import KqFarm
farm = KqFarm(kq_client.KqClient())
${script}`], { env: { KQ_DATA_ROOT: kq.dataRoot, HOME: tempDir() }, extendEnv: false, reject: false, timeout: 120_000 });
  if (r.exitCode !== 0) throw new Error(`python failed (${r.exitCode}): ${r.stderr}`);
  return JSON.parse(String(r.stdout).trim().split('\n').pop()!);
}

describe('kq_katana.farm.KqFarm on a real kq', () => {
  it('Preview Render of a node for a frame range: one renderboot per frame, frame in place of -frame', async () => {
    const shot = tempDir('kq-katana-shot-');
    const job = await py(`
job = farm.submit_preview(${JSON.stringify(path.join(bin, 'renderboot'))}, ["-renderer", "arnold", "-geolib3OpTree", "/tmp/op.optree", "-frame", "1"],
                          "1-3", "Merge1", katana_file=${JSON.stringify(path.join(shot, 'sh010.katana'))})
print(json.dumps(job))`);
    expect(job.name).toBe('sh010.katana Merge1 Preview Render 1-3');
    const done = await kq.waitJob(job.id);
    expect(done.state).toBe('Completed');
    expect(done.argv).toEqual([path.join(bin, 'renderboot'), '-renderer', 'arnold', '-geolib3OpTree', '/tmp/op.optree', '-frame', '{frame}']);
    expect(done.taskList.map((t: any) => t.frames)).toEqual([[1], [2], [3]]);
    for (const f of [1, 2, 3]) expect(fs.readFileSync(path.join(shot, `preview_${f}.txt`), 'utf8')).toBe(`frame ${f}\n`);
    expect((await kq.ctl('log', String(job.id))).stdout).toContain('100% done');
  });

  it('Disk Render of a Render node: katana --batch -t START-END per chunk', async () => {
    const shot = tempDir('kq-katana-shot-');
    const job = await py(`
print(json.dumps(farm.submit_disk(${JSON.stringify(path.join(bin, 'katana'))}, ${JSON.stringify(path.join(shot, 'sh020.katana'))}, "Render_beauty", "1-4", chunk=2)))`);
    expect(job.name).toBe('sh020.katana Render_beauty Disk Render 1-4');
    const done = await kq.waitJob(job.id);
    expect(done.state).toBe('Completed');
    expect(done.framesDone).toBe(4);
    const calls = fs.readFileSync(path.join(shot, 'batch_calls.txt'), 'utf8').trim().split('\n').sort();
    expect(calls).toEqual([
      `katana --batch --katana-file=${path.join(shot, 'sh020.katana')} --render-node=Render_beauty -t 1-2`,
      `katana --batch --katana-file=${path.join(shot, 'sh020.katana')} --render-node=Render_beauty -t 3-4`,
    ]);
    for (const f of [1, 2, 3, 4]) expect(fs.existsSync(path.join(shot, `disk_${f}.txt`))).toBe(true);
  });

  it("the kq tab's rows, a job's log, Stop and Restart", async () => {
    const shot = tempDir('kq-katana-shot-');
    fs.writeFileSync(path.join(shot, 'hang'), '');
    const job = await py(`
print(json.dumps(farm.submit_preview(${JSON.stringify(path.join(bin, 'renderboot'))}, [], "7", "Cam", katana_file=${JSON.stringify(path.join(shot, 'sh030.katana'))})))`);
    await waitFor('running', async () => (await kq.json('show', String(job.id))).state === 'Running');
    const rows = await py(`
farm.stop([${job.id}])
print(json.dumps({"rows": farm.jobs(), "state": farm.state(${job.id}), "log": farm.log(${job.id})}))`);
    expect(rows.state).toBe('Cancelled');
    const row = rows.rows.find((r: any[]) => r[0] === job.id);
    expect(row.slice(0, 4)).toEqual([job.id, 'sh030.katana Cam Preview Render 7', 'Cancelled', '0/1']);
    expect(row[4]).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);
    expect(row[6]).toBe(path.join(kq.dataRoot, 'logs', `job-${job.id}.log`));
    expect(rows.log).toContain('attempt 1 started');
    fs.rmSync(path.join(shot, 'hang'));
    await py(`farm.restart([${job.id}]); print(1)`);
    expect((await kq.waitJob(job.id)).state).toBe('Completed');
  });
});

describe('Plugins/kq_farm_plugin.py with a stand-in Katana module (Katana itself is not here)', () => {
  it('submitJob runs Katana\'s renderboot command over the tab\'s frame range; getJobs, getJobState, getJobRenderLog', async () => {
    const shot = tempDir('kq-katana-shot-');
    const r = await py(`
import types
katana = types.ModuleType("Katana")
katana.FarmAPI = types.SimpleNamespace(BaseFarmPlugin=object)
katana.NodegraphAPI = types.SimpleNamespace(GetProjectFile=lambda: ${JSON.stringify(path.join(shot, 'sh040.katana'))}, GetAllSelectedNodes=lambda: [])
sys.modules["Katana"] = katana
sys.path.insert(0, ${JSON.stringify(path.join(ROOT, 'integrations', 'katana', 'Plugins'))})
import kq_farm_plugin
assert kq_farm_plugin.PluginRegistry == [("FarmPlugin", 2.0, "kq", kq_farm_plugin.KqFarmPlugin)]
class Request(object):
    def getRenderbootCommand(self): return [${JSON.stringify(path.join(bin, 'renderboot'))}, "-renderer", "dl", "-frame", "5"]
    def getFrame(self): return 5
    def getNodeName(self): return "Teapot"
plugin = kq_farm_plugin.KqFarmPlugin()
one = plugin.submitJob(Request())
kq_farm_plugin.settings["frames"] = "1-2"
two = plugin.submitJob(Request())
try:
    plugin.submitJob(types.SimpleNamespace(getFrame=lambda: 1, getNodeName=lambda: "x"))
    missing = None
except RuntimeError as e:
    missing = str(e)
print(json.dumps({"one": one, "two": two, "ids": plugin.getJobs(), "missing": missing}))`);
    expect(typeof r.one).toBe('string');
    expect(r.ids).toEqual(expect.arrayContaining([r.one, r.two]));
    expect(r.missing).toMatch(/has no getRenderbootCommand\(\).*adapt _renderboot_argv\(\)/);
    const [one, two] = [await kq.waitJob(Number(r.one)), await kq.waitJob(Number(r.two))];
    expect([one.name, one.frameSpec, one.state]).toEqual(['sh040.katana Teapot Preview Render 5', '5', 'Completed']);
    expect([two.name, two.frameSpec, two.state]).toEqual(['sh040.katana Teapot Preview Render 1-2', '1-2', 'Completed']);
    expect(fs.readdirSync(shot).filter((f) => f.startsWith('preview_')).sort()).toEqual(['preview_1.txt', 'preview_2.txt', 'preview_5.txt']);
    const after = await py(`
import types
sys.modules["Katana"] = types.SimpleNamespace(FarmAPI=types.SimpleNamespace(BaseFarmPlugin=object), NodegraphAPI=None)
sys.path.insert(0, ${JSON.stringify(path.join(ROOT, 'integrations', 'katana', 'Plugins'))})
import kq_farm_plugin
p = kq_farm_plugin.KqFarmPlugin()
print(json.dumps([p.getJobState("${r.one}"), "attempt 1 started" in p.getJobRenderLog("${r.one}")]))`);
    expect(after).toEqual(['Completed', true]);
  });
});
