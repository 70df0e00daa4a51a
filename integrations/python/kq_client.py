"""kq_client: talk to kq, the render queue, from Python (Blender, Katana, scripts).

Standard library only; runs on Python 3.7 (Katana 4) and later (Blender 3.4 ships 3.10/3.11).
It finds kq exactly as kqctl does -- the data root is KQ_DATA_ROOT, else $XDG_DATA_HOME/kq, else
~/.local/share/kq, and <data root>/kq.json says where kq listens -- and talks to kq's HTTP JSON API
(the web monitor's /api routes), sending the monitor token when kq needs one.

    import kq_client
    kq = kq_client.KqClient()
    job = kq.submit(["blender", "-b", "/shots/a.blend", "-s", "{start}", "-e", "{end}", "-a"],
                    frames="1-100", chunk=10, name="a.blend")
    for text in kq.follow_log(job["id"]):
        print(text, end="")

Every failure is a KqError whose message is kqctl's for the same case and whose exit_code is the code
kqctl would exit with (2 bad input or unknown job, 3 kq unreachable, 1 a job failed).
"""
import json
import os
import re
import time
import socket

try:  # Python 3
    from urllib import request as _request, error as _error, parse as _parse
except ImportError:  # pragma: no cover - Python 2 is not supported
    raise

__all__ = [
    "KqClient", "KqError", "KqUnreachable", "KqNoReply", "KqJobFailed", "default_data_root", "parse_duration",
    "TERMINAL_STATES", "DEFAULT_HTTP_PORT",
]

DEFAULT_HTTP_PORT = 5563
TERMINAL_STATES = ("Completed", "Failed", "Cancelled")

# kqctl's exit codes (src/kqctl/exit-codes.ts), carried by every KqError.
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_NO_REPLY = 7


class KqError(Exception):
    """A request kq refused or could not answer; `code` is kq's error code, `exit_code` kqctl's."""

    def __init__(self, message, exit_code=EXIT_USAGE, code=None):
        Exception.__init__(self, message)
        self.message = message
        self.exit_code = exit_code
        self.code = code


class KqUnreachable(KqError):
    """kq is not running, or not where kq.json / the environment say."""

    def __init__(self, message):
        KqError.__init__(self, message, EXIT_UNREACHABLE, "unreachable")


class KqNoReply(KqError):
    """A request that changes something reached kq, and no answer came in time: it may have been applied.
    Not a KqUnreachable on purpose: check (list()) before retrying, or a retried submit duplicates the job."""

    def __init__(self, message):
        KqError.__init__(self, message, EXIT_NO_REPLY, "no-reply")


class KqJobFailed(KqError):
    """submit(wait=True) or wait(): the job ended Failed or Cancelled. `job` is its last summary."""

    def __init__(self, job):
        KqError.__init__(self, "job %s %s: see kqctl log %s" % (job["id"], job["state"].lower(), job["id"]),
                         EXIT_JOB_FAILED, "job-failed")
        self.job = job


def default_data_root(env=None):
    """Where kq keeps kq.json: KQ_DATA_ROOT, else $XDG_DATA_HOME/kq, else ~/.local/share/kq (src/common/paths.ts)."""
    env = os.environ if env is None else env
    if env.get("KQ_DATA_ROOT"):
        return os.path.abspath(env["KQ_DATA_ROOT"])
    xdg = env.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(xdg, "kq")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def parse_duration(value):
    """kqctl's durations: 90 (seconds), "90s", "30m", "2h", "500ms" -> milliseconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        ms = float(value) * 1000
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise KqError('invalid duration "%s" (examples: 90s, 30m, 2h)' % value)
        n = float(m.group(1))
        unit = m.group(2) or "s"
        ms = n * {"ms": 1, "s": 1000, "m": 60000, "h": 3600000}[unit]
    if ms <= 0:
        raise KqError('duration must be positive: "%s"' % value)
    return int(round(ms))


class KqClient(object):
    """One kq, found like kqctl finds it. Nothing is contacted until the first request.

    data_root: kq's data root (default: KQ_DATA_ROOT, then the default data root).
    url:       the monitor's address, e.g. "http://127.0.0.1:5563/" (default: kq.json's httpUrl, or
               KQ_HOST + KQ_HTTP_PORT, or 127.0.0.1 and the default port).
    token:     the monitor token (default: KQ_HTTP_TOKEN, then <data root>/http-token when it exists).
    timeout:   seconds to wait for kq's answer to one request.
    """

    def __init__(self, data_root=None, url=None, token=None, timeout=15.0, env=None):
        env = os.environ if env is None else env
        self.data_root = os.path.abspath(data_root) if data_root else default_data_root(env)
        self.timeout = timeout
        info_file = os.path.join(self.data_root, "kq.json")
        info = {}
        self.source = "default port"
        try:
            with open(info_file, "r") as f:
                info = json.load(f)
            self.source = info_file
        except (IOError, OSError, ValueError):
            pass  # no kq.json: kq is not running on this data root, or runs elsewhere (env says where)
        self.no_http = bool(info) and not info.get("httpUrl") and not url and not env.get("KQ_HTTP_PORT")
        if url:
            self.source = "url argument"
        elif env.get("KQ_HOST") or env.get("KQ_HTTP_PORT"):
            host = env.get("KQ_HOST") or "127.0.0.1"
            port = env.get("KQ_HTTP_PORT") or (info.get("httpPort") if info else None) or DEFAULT_HTTP_PORT
            url = "http://%s:%s/" % ("[%s]" % host if ":" in host else host, port)
            self.source = "KQ_HOST/KQ_HTTP_PORT"
        elif info.get("httpUrl"):
            url = info["httpUrl"]
        else:
            url = "http://127.0.0.1:%d/" % DEFAULT_HTTP_PORT
        self.url = url if url.endswith("/") else url + "/"
        if token is None:
            token = env.get("KQ_HTTP_TOKEN") or _read_token(os.path.join(self.data_root, "http-token"))
        self.token = token or None

    # ---------- jobs ----------

    def submit(self, argv, name=None, frames=None, chunk=1, priority=0, cwd=None, env=None, retries=2,
               timeout=None, shell=False, output=None, wait=False, poll=1.0):
        """Queue a job, as `kqctl submit [options] -- ARGV...`; returns the job's summary (a dict with "id").

        argv may name {frame}, {start}, {end} (padded: {frame:04}). env is a dict or a list of "K=V".
        timeout is seconds or a kqctl duration ("30m"). output is the frames the render writes, relative
        to cwd, e.g. "frames/shot_{frame:04}.png" (the monitor shows them). With wait=True, returns the
        job once it ended Completed, and raises KqJobFailed if it ended Failed or Cancelled.
        """
        if isinstance(argv, str):
            raise KqError("give the command as a list of arguments, e.g. ['blender', '-b', 'shot.blend', '-a']")
        argv = [str(a) for a in argv]
        if not argv or argv[0].strip() == "":
            raise KqError("empty command: give the program to run after --")
        env_map = {}
        if isinstance(env, dict):
            env_map = dict((str(k), str(v)) for k, v in env.items())
        elif env:
            for pair in env:
                eq = pair.find("=")
                if eq <= 0:
                    raise KqError('--env takes KEY=VALUE, got "%s"' % pair)
                env_map[pair[:eq]] = pair[eq + 1:]
        job = {
            "argv": argv, "chunk": int(chunk), "priority": int(priority),
            "cwd": os.path.abspath(cwd) if cwd else os.getcwd(), "env": env_map,
            "maxAttempts": int(retries) + 1, "shell": bool(shell),
        }
        if name:
            job["name"] = str(name)
        if frames is not None and str(frames).strip() != "":
            job["frames"] = str(frames)
        if timeout is not None:
            job["timeoutMs"] = parse_duration(timeout)
        if output:
            job["output"] = str(output)
        submitted = self._call("POST", "api/jobs", job)
        if not wait:
            return submitted
        return self.wait(submitted["id"], poll=poll)

    def list(self, states=None):
        """Jobs, newest last, as `kqctl list --json`; states: e.g. ["Running", "Waiting"]."""
        query = [("state", s) for s in (states or [])]
        return self._call("GET", "api/jobs" + ("?" + _parse.urlencode(query) if query else ""))

    def show(self, job_id):
        """One job with its tasks (`kqctl show ID --json`)."""
        return self._call("GET", "api/jobs/%d" % _job_id(job_id))

    def log(self, job_id):
        """The job's whole render log so far, as text (`kqctl log ID`)."""
        text, _ = self._read_log(_job_id(job_id), 0)
        return text

    def follow_log(self, job_id, poll=0.5):
        """Yield the job's log text as it grows, until the job ended and all of it was read (`kqctl log -f`)."""
        job_id = _job_id(job_id)
        offset = 0
        while True:
            text, chunk = self._read_log(job_id, offset)
            offset = chunk["next"]
            if text:
                yield text
            if chunk["state"] in TERMINAL_STATES:
                text, chunk = self._read_log(job_id, offset)
                if text:
                    yield text
                return
            time.sleep(poll)

    def stop(self, job_ids):
        """Stop jobs (one id or a list): waiting tasks are cancelled, running renders killed. Returns the jobs."""
        return self._call("POST", "api/stop", {"jobIds": _job_ids(job_ids)})

    def restart(self, job_ids, failed_only=False):
        """Requeue jobs (all tasks, or only failed and cancelled ones). Returns the jobs."""
        return self._call("POST", "api/restart", {"jobIds": _job_ids(job_ids), "failedOnly": bool(failed_only)})

    def wait(self, job_id, poll=1.0, timeout=None):
        """Block until the job ends; return it if Completed, raise KqJobFailed otherwise (`kqctl wait`)."""
        job_id = _job_id(job_id)
        deadline = None if timeout is None else time.time() + timeout
        while True:
            job = self._call("GET", "api/jobs/%d" % job_id)
            if job["state"] in TERMINAL_STATES:
                if job["state"] != "Completed":
                    raise KqJobFailed(job)
                return job
            if deadline is not None and time.time() > deadline:
                raise KqError("job %d still %s after %ss" % (job_id, job["state"].lower(), timeout), EXIT_JOB_FAILED, "timeout")
            time.sleep(poll)

    def agents(self):
        """The agents kq knows (`kqctl agents --json`)."""
        return self._call("GET", "api/agents")

    def info(self):
        """kq.json's contents as kq reports them, plus the monitor's address."""
        return self._call("GET", "api/info")

    def monitor_url(self, job_id=None):
        """The web monitor's page, opened at a job when one is given (token included when kq needs one)."""
        url = self.url
        if self.token:
            url += "?" + _parse.urlencode({"token": self.token})
        if job_id is not None:
            url += "#job=%d" % _job_id(job_id)
        return url

    # ---------- HTTP ----------

    def _read_log(self, job_id, offset):
        text = ""
        while True:
            chunk = self._call("GET", "api/jobs/%d/log?from=%d" % (job_id, offset))
            text += chunk["text"]
            if chunk["next"] >= chunk["size"] or chunk["text"] == "":
                return text, chunk
            offset = chunk["next"]

    def _call(self, method, path, body=None):
        if self.no_http:
            raise KqError("kq at %s runs without its web monitor (--no-http), which kq_client talks to: "
                          "restart kq without --no-http" % self.data_root, EXIT_UNREACHABLE, "no-http")
        data = None
        headers = {"Accept": "application/json"}
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        req = _request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            resp = _request.urlopen(req, timeout=self.timeout)
            try:
                return json.loads(resp.read().decode("utf-8"))
            except ValueError:  # 200 but not JSON: not kq's API
                raise KqError("%s answered, but not as kq does: is another program on that port? (address from %s)"
                              % (self.url, self.source), EXIT_UNREACHABLE, "not-kq")
            finally:
                resp.close()
        except _error.HTTPError as err:
            raise self._refused(err)
        except _error.URLError as err:  # urllib wraps what fails before the request is sent (connect, send)
            raise KqUnreachable(
                "cannot reach kq at %s (%s; address from %s): is kq running? start it with `kq`, "
                "or check KQ_HOST/KQ_HTTP_PORT/KQ_DATA_ROOT" % (self.url, _describe(err.reason), self.source))
        except (socket.timeout, ConnectionError, OSError) as err:
            # The request went out; its answer did not come (in time): kq may have applied it.
            waited = "kq at %s got the request (%s %s) but did not answer (%s; address from %s)" % (
                self.url, method, path, _describe(err), self.source)
            if method != "GET":
                raise KqNoReply(waited + ": it may have been applied; check list() before retrying")
            raise KqUnreachable(waited + ": give it longer with timeout=")

    def _refused(self, err):
        try:
            payload = json.loads(err.read().decode("utf-8"))
            message, code = payload.get("error") or str(err), payload.get("code")
        except Exception:  # not kq's JSON: something else answers on that port
            return KqError("%s answered HTTP %d, not as kq does: is another program on that port? (address from %s)"
                           % (self.url, err.code, self.source), EXIT_UNREACHABLE, "not-kq")
        finally:
            err.close()
        if err.code == 401 and not self.token:
            message += " (set KQ_HTTP_TOKEN, or pass token=)"
        return KqError(message, 1 if code == "internal" else EXIT_USAGE, code)


def _read_token(path):
    try:
        with open(path, "r") as f:
            return f.read().strip() or None
    except (IOError, OSError):
        return None


def _describe(reason):
    if isinstance(reason, socket.timeout):
        return "no reply in time"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    return str(reason)


def _job_id(value):
    if isinstance(value, bool) or not re.match(r"^\d+$", str(value)):
        raise KqError('not a job id: "%s"' % value)
    return int(value)


def _job_ids(values):
    if isinstance(values, (int, str)):
        values = [values]
    return [_job_id(v) for v in values]
