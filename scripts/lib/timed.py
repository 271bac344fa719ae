# Runs one command, timestamps every output line as it arrives, and (with --expect) polls
# the router from the start until the page holds the expected text. Appends a JSON record to
# --out; prints "RETURNED SEEN RELEASE" (seconds since start, release number).
# Used by scripts/bench-*.sh.
import argparse, http.client, json, os, re, subprocess, sys, threading, time

ap = argparse.ArgumentParser()
ap.add_argument("--tag", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--port", type=int)
ap.add_argument("--host")
ap.add_argument("--expect")
ap.add_argument("--cpu", default="", help="ctl=PID,agent=PID,...: CPU seconds each used")
ap.add_argument("cmd", nargs=argparse.REMAINDER)
a = ap.parse_args()
cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd

def cpu():
    # utime + stime of the process (all its threads) and of its waited-for children.
    out = {}
    for item in filter(None, a.cpu.split(",")):
        name, pid = item.split("=")
        try:
            f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            out[name] = out.get(name, 0) + sum(int(x) for x in f[11:15]) / os.sysconf("SC_CLK_TCK")
        except OSError:
            pass
    return out

cpu0 = cpu()
t0 = time.monotonic()
lines, seen, stop = [], {}, threading.Event()

def poll():
    while not stop.is_set():
        try:
            c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=2)
            c.request("GET", "/", headers={"Host": a.host})
            r = c.getresponse()
            body = r.read().decode(errors="replace")
            c.close()
            if r.status == 200 and a.expect in body:
                seen["t"] = time.monotonic() - t0
                return
        except Exception:
            pass
        time.sleep(0.02)

def reader(f):
    buf = b""
    while True:
        chunk = os.read(f.fileno(), 65536)
        now = time.monotonic() - t0
        if not chunk:
            break
        buf += chunk
        parts = re.split(rb"[\r\n]", buf)
        buf = parts.pop()
        for p in parts:
            s = p.decode(errors="replace").strip()
            if s:
                lines.append((now, s))
    if buf.strip():
        lines.append((time.monotonic() - t0, buf.decode(errors="replace").strip()))

poller = None
if a.expect:
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
rs = [threading.Thread(target=reader, args=(f,)) for f in (p.stdout, p.stderr)]
for r in rs:
    r.start()
rc = p.wait()
ret = time.monotonic() - t0
for r in rs:
    r.join()
if poller:
    poller.join(timeout=30)
    stop.set()
cpu1 = cpu()
rec = {"tag": a.tag, "rc": rc, "ret": ret, "seen": seen.get("t"), "lines": lines,
       "cpu": {k: cpu1[k] - cpu0.get(k, 0) for k in cpu1}}
with open(a.out, "a") as f:
    f.write(json.dumps(rec) + "\n")
if rc != 0 or (a.expect and "t" not in seen):
    sys.stderr.write(f"!! {a.tag}: rc={rc}, expected {a.expect!r} seen={'t' in seen}\n")
    for t, s in lines:
        sys.stderr.write(f"   {t:7.3f} {s}\n")
    sys.exit(1)
rel = next((m.group(1) for _, s in lines for m in [re.search(r"Released v(\d+) of", s)] if m), "-")
print(f"{ret:.3f} {seen.get('t', float('nan')):.3f} {rel}")
