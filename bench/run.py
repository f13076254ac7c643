#!/usr/bin/env python3
"""Benchmark rustwsgi against other WSGI servers under identical conditions.

    python bench/run.py                     # set up the bench venv, build rustwsgi (release), run everything
    python bench/run.py --quick             # 1 repetition of 2 s per server and scenario
    python bench/run.py --scenarios hello,flask --servers rustwsgi,granian-bt4 --reps 3
    python bench/run.py --report bench/results/RUN_ID   # re-render a run's report and charts

Any Python 3.10+ can start it: it creates (or reuses) the bench virtualenv, builds rustwsgi there with
``maturin build --release`` and installs the wheel with its ``bench`` extra (the peer servers, Flask, Django
and matplotlib, from PyPI), then re-runs itself with the venv's interpreter to measure. Results go to
``bench/results/RUN_ID/``: report.md, *.png, records.jsonl, meta.json and the servers' logs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import registry  # stdlib only; bench/ is on sys.path as the script's directory

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / 'results'
# What the `bench` extra (pyproject.toml) installs, as imported.
IMPORTS = 'import granian, gunicorn, waitress, fastwsgi, bjoern, flask, django, matplotlib'
QUICK = {'reps': 1, 'duration': 2, 'warmup': 1, 'max_wait': 2.0, 'retries': 0}
FULL = {'reps': 3, 'duration': 5, 'warmup': 1, 'max_wait': 30.0, 'retries': 1}


def parse_args() -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        '--venv',
        type=Path,
        default=Path(os.environ.get('RUSTWSGI_BENCH_VENV', BENCH / '.venv')),
        help='bench virtualenv, created if missing (default: bench/.venv or $RUSTWSGI_BENCH_VENV)',
    )
    p.add_argument('--no-build', action='store_true', help='use the rustwsgi already installed in the venv')
    p.add_argument('--quick', action='store_true', help='1 repetition, 2 s runs, short quiet-gate wait')
    p.add_argument('--scenarios', help='comma list (default: all)')
    p.add_argument('--servers', help=f'comma list (default: {",".join(registry.DEFAULT_SERVERS)})')
    p.add_argument('--conc', type=int, default=64, help='wrk connections (default: %(default)s)')
    p.add_argument('--reps', type=int, help=f'repetitions (default: {FULL["reps"]})')
    p.add_argument('--duration', type=int, help=f'seconds per measured wrk run (default: {FULL["duration"]})')
    p.add_argument('--warmup', type=int, help=f'seconds of warm-up load (default: {FULL["warmup"]})')
    p.add_argument('--max-wait', type=float, help=f'max seconds to wait for quiet cores (default: {FULL["max_wait"]})')
    p.add_argument('--retries', type=int, help=f're-measure a noisy run up to N times (default: {FULL["retries"]})')
    p.add_argument('--report', type=Path, metavar='RUN_DIR', help='only re-render report.md and charts of a run')
    p.add_argument('--in-venv', action='store_true', help=argparse.SUPPRESS)
    return p.parse_args()


# ----------------------------------------------------------------------------------------------------------------
# Set-up: venv, peers, release build of rustwsgi
# ----------------------------------------------------------------------------------------------------------------
def run(argv: list[Any], **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run a set-up command, echoing it."""
    print('+', ' '.join(str(a) for a in argv), flush=True)
    return subprocess.run([str(a) for a in argv], check=True, text=True, **kw)  # noqa: S603


def check_tools() -> None:
    """wrk, taskset and two CPUs are required (see bench/README.md)."""
    missing = [t for t in ('wrk', 'taskset') if not shutil.which(t)]
    if missing:
        sys.exit(f'missing {", ".join(missing)}: apt-get install wrk util-linux (see bench/README.md)')
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit('needs two CPUs: the server is pinned to CPU 0, wrk to CPU 1')


def ensure_venv(venv: Path, build: bool) -> Path:
    """Create the bench venv if needed, with maturin to build rustwsgi; returns its python. Without a build, the
    rustwsgi and peers installed there are used as they are."""
    py = venv / 'bin' / 'python'
    if not py.exists():
        run([sys.executable, '-m', 'venv', venv])
    if build and not (venv / 'bin' / 'maturin').exists():
        run([py, '-m', 'pip', 'install', '--upgrade', 'pip'])
        run([py, '-m', 'pip', 'install', 'maturin>=1.5,<2'])
    if not build and subprocess.run([py, '-c', IMPORTS], capture_output=True, check=False).returncode:  # noqa: S603
        sys.exit(f"--no-build: {venv} lacks the peers; run once without it (or pip install 'rustwsgi[bench]')")
    return py


def build_rustwsgi(py: Path) -> None:
    """maturin build --release into a target directory of its own, then install the wheel into the venv, with the
    peers of its ``bench`` extra (pip leaves those already there)."""
    env = dict(os.environ, CARGO_TARGET_DIR=str(REPO / 'target' / 'bench'))
    with tempfile.TemporaryDirectory() as out:
        run([py.parent / 'maturin', 'build', '--release', '--interpreter', py, '--out', out], cwd=REPO, env=env)
        wheel = sorted(Path(out).glob('rustwsgi-*.whl'))[-1]
        run([py, '-m', 'pip', 'install', '--force-reinstall', '--no-deps', wheel])
        run([py, '-m', 'pip', 'install', f'{wheel}[bench]'])


# ----------------------------------------------------------------------------------------------------------------
# Run metadata
# ----------------------------------------------------------------------------------------------------------------
def _first(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=10)  # noqa: S603
    except OSError:
        return '?'
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else '?'


def machine_info(a: argparse.Namespace, settings: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Date, machine, versions and settings of this run."""
    cpu = next(
        (
            line.split(':', 1)[1].strip()
            for line in Path('/proc/cpuinfo').read_text().splitlines()
            if line.startswith('model name')
        ),
        platform.processor() or '?',
    )
    mem_kb = int(Path('/proc/meminfo').read_text().split()[1])
    status = ['git', '-C', str(REPO), 'status', '--porcelain', '--untracked-files=no']
    dirty = subprocess.run(status, capture_output=True, text=True, check=False).stdout.strip() != ''  # noqa: S603
    versions = {}
    for pkg in ['rustwsgi', 'granian', 'fastwsgi', 'bjoern', 'gunicorn', 'waitress', 'flask', 'django']:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = 'missing'
    return {
        'run_id': run_id,
        'date': dt.datetime.now().astimezone().isoformat(timespec='seconds'),
        'commit': _first(['git', '-C', str(REPO), 'rev-parse', '--short', 'HEAD']) + ('+dirty' if dirty else ''),
        'cpu': cpu,
        'cores': os.cpu_count(),
        'mem': f'{mem_kb / 2**20:.0f} GiB RAM',
        'kernel': platform.release(),
        'python': platform.python_version(),
        'wrk': _first(['wrk', '-v']).split(' [')[0],
        'versions': versions,
        'quick': a.quick,
        'conc': a.conc,
        'loadavg_start': Path('/proc/loadavg').read_text().split()[:3],
        **settings,
    }


# ----------------------------------------------------------------------------------------------------------------
# The matrix
# ----------------------------------------------------------------------------------------------------------------
def plan(scenarios: list[Any], servers: list[Any], reps: int) -> list[tuple[int, Any, Any]]:
    """(rep, scenario, server) in run order: repetition outermost, servers A..Z then Z..A on alternate cells.

    A scenario with an app loop has one more member in its cell, ``None``: the app called with no server."""
    jobs = []
    for rep in range(reps):
        for i, sc in enumerate(scenarios):
            members = [*servers, None] if sc.app_loop else servers
            order = members if (rep + i) % 2 == 0 else members[::-1]
            jobs += [(rep, sc, s) for s in order]
    return jobs


def _line(i: int, n: int, t0: float, rec: dict[str, Any]) -> str:
    if rec.get('skipped'):
        return f'[{i:3d}/{n}] SKIP {rec["scenario"]:9s} {rec["server"]:17s} {rec["skipped"]}'
    flag = ('ok ' if rec.get('ok') else 'BAD') + ('~' if rec.get('noisy') else ' ')
    return (
        f'[{i:3d}/{n} {time.monotonic() - t0:5.0f}s] {flag} r{rec["rep"]} {rec["scenario"]:9s} {rec["server"]:17s} '
        f'rps={rec.get("rps") or 0:>9,.0f} p50={rec.get("p50_ms") or 0:7.2f}ms p99={rec.get("p99_ms") or 0:7.2f}ms '
        f'rss={rec.get("peak_rss_mb") or 0:6.1f}MiB cpu/resp={rec.get("cpu_us_per_req") or 0:7.1f}us '
        f'foreign={rec.get("foreign_cpu_pct") or 0:4.1f}% {"; ".join(rec.get("issues", []))[:100]}'
    )


def measure_all(a: argparse.Namespace) -> Path:
    """Run the matrix inside the bench venv; returns the run directory."""
    import measure
    import report

    settings = dict(QUICK if a.quick else FULL)
    settings.update({k: getattr(a, k) for k in settings if getattr(a, k, None) is not None})
    known = {s.name: s for s in registry.servers(sys.executable)}
    names = a.servers.split(',') if a.servers else registry.DEFAULT_SERVERS
    scen = {s.name: s for s in registry.SCENARIOS}
    wanted = a.scenarios.split(',') if a.scenarios else list(scen)
    unknown = (set(names) - set(known)) | (set(wanted) - set(scen))
    if unknown:
        sys.exit(f'unknown servers/scenarios: {sorted(unknown)}; servers: {sorted(known)}; scenarios: {list(scen)}')
    servers, scenarios = [known[n] for n in names], [scen[n] for n in wanted]

    run_id = dt.datetime.now().strftime('%Y%m%d-%H%M%S')
    run_dir = RESULTS / run_id
    (run_dir / 'logs').mkdir(parents=True)
    meta = machine_info(a, {**settings, 'server_cpu': measure.SERVER_CPU, 'client_cpu': measure.CLIENT_CPU}, run_id)
    meta['notes'] = {s.name: s.note for s in servers}
    (run_dir / 'meta.json').write_text(json.dumps(meta, indent=1))
    os.sched_setaffinity(0, {measure.CLIENT_CPU})  # the runner mostly sleeps; keep it off the server's core
    if any(sc.name == 'file' for sc in scenarios):
        import apps

        apps.data_file()  # create the 10 MiB file once, before any server races to do it
    opts = measure.Opts(settings['duration'], settings['warmup'], settings['max_wait'], run_dir / 'logs')
    jobs = plan(scenarios, servers, settings['reps'])
    print(
        f'run {run_id}: {len(jobs)} measurements, about '
        f'{len(jobs) * (settings["duration"] + settings["warmup"] + 3) / 60:.0f} min -> {run_dir}',
        flush=True,
    )
    t0 = time.monotonic()
    with (run_dir / 'records.jsonl').open('w') as out:
        for i, (rep, sc, srv) in enumerate(jobs, 1):
            for attempt in range(1 + settings['retries']):
                if srv is None:
                    rec = measure.app_loop(sc, rep, opts)
                elif sc.workers > 1 and srv.no_workers:
                    rec = {'server': srv.name, 'scenario': sc.name, 'rep': rep, 'skipped': srv.no_workers}
                else:
                    argv_for = functools.partial(srv.argv, sys.executable, sc.target, workers=sc.workers)
                    rec = measure.measure(srv.name, argv_for, sc, sc.conc or a.conc, rep, opts)
                    rec['attempt'] = attempt
                out.write(json.dumps(rec) + '\n')
                out.flush()
                print(_line(i, len(jobs), t0, rec), flush=True)
                if not rec.get('noisy'):
                    break
    path = report.write_report(run_dir)
    records, _ = report.load(run_dir)
    agg, scenario_names = report.summarize(records), [s.name for s in scenarios]
    print('\n' + '\n'.join(report.summary_table(agg, scenario_names, names)))
    print('\n'.join(report.app_loop_table(agg, scenario_names, names)))
    print(f'wrote {path} and charts ({(time.monotonic() - t0) / 60:.1f} min)')
    return run_dir


def main() -> None:
    """Set up the venv and build (outside it), then measure (inside it)."""
    a = parse_args()
    if not a.in_venv:
        py = a.venv.resolve() / 'bin' / 'python'
        if not a.report:
            check_tools()
            py = ensure_venv(a.venv.resolve(), build=not a.no_build)
            if not a.no_build:
                build_rustwsgi(py)
        os.execv(py, [str(py), __file__, *sys.argv[1:], '--in-venv'])  # noqa: S606
    sys.path.insert(0, str(BENCH))
    if a.report:
        import report

        print(report.write_report(a.report.resolve()))
        return

    def _term(signum: int, frame: Any) -> None:  # let finally-blocks stop the server under test
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    measure_all(a)


if __name__ == '__main__':
    main()
