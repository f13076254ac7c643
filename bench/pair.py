"""Head to head: rustwsgi and one peer share the server core at the same moment.

Both serve the same scenario on CPU 0 at once, each loaded by its own ``wrk -t1`` on CPU 1, and each one's CPU
time per response is read from /proc over the same seconds. Whatever else the machine does during those seconds
slows both alike, so their ratio holds still where sequential runs on a shared machine move by tens of percent.
The price: the two servers share one core and its caches, so the absolute figures are not those of a server
alone (``run.py`` gives those). Rounds alternate which server starts first and which port it gets.

The same method compares two rustwsgi builds: ``--baseline DIR`` runs the build installed in DIR (``pip install
--target DIR``) as the peer ``rustwsgi-baseline``.

``--in-turn`` measures each server alone instead: both are started side by side on CPU 0 and loaded one after the
other, ``--rounds`` times in short runs (order alternating), so each gets the core to itself as in ``run.py`` while
drifts of the machine slower than a round still hit both alike. Use it where sharing the core changes what is
measured, such as how a server batches its responses.

    python3 bench/pair.py --venv /work/benchvenv --scenarios hello,chunked --peers bjoern,fastwsgi --rounds 4
    python3 bench/pair.py --venv /work/benchvenv --scenarios flask --peers '' --baseline DIR --in-turn --rounds 24 \
        --duration 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import measure
from registry import SCENARIOS, SUBJECT, Scenario, Server, servers

BENCH = measure.BENCH
BASELINE = f'{SUBJECT}-baseline'
WARMUP_S = 1
DEFAULT_CONC = 64  # wrk connections per server, unless the scenario sets its own


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--venv', type=Path, required=True, help='venv with rustwsgi and the peers installed')
    p.add_argument('--scenarios', default='hello,chunked,echo,flask,django')
    p.add_argument('--peers', default='bjoern,fastwsgi,granian-bt4')
    p.add_argument('--baseline', type=Path, help=f'a rustwsgi build installed in this directory, run as {BASELINE}')
    p.add_argument('--rounds', type=int, default=4)
    p.add_argument('--duration', type=int, default=5, help='seconds of load per round')
    p.add_argument('--in-turn', action='store_true', help='load the two servers one after the other, not at once')
    p.add_argument('--out', type=Path, default=BENCH / 'results')
    a = p.parse_args()
    if a.rounds < 1 or a.duration < 1:
        p.error('--rounds and --duration must be at least 1')
    return a


def server_table(py: str, baseline: Path | None) -> dict[str, Server]:
    table = {s.name: s for s in servers(py)}
    if baseline is not None:
        subject = table[SUBJECT]
        path = os.pathsep.join([str(baseline.resolve()), str(BENCH)])
        table[BASELINE] = Server(BASELINE, f'env PYTHONPATH={path} {subject.cmd}', f'rustwsgi from {baseline}')
    return table


def start_wrk(port: int, sc: Scenario, seconds: int) -> subprocess.Popen[str]:
    argv, env = measure.wrk_command(port, sc, sc.conc or DEFAULT_CONC, seconds)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)  # noqa: S603


def wrk_requests(proc: subprocess.Popen[str]) -> int:
    out, _ = proc.communicate(timeout=60)
    stats = measure.wrk_stats(out)
    if stats is None or proc.returncode != 0:
        raise RuntimeError(f'wrk failed: {out.strip()[-300:]}')
    errors = sum(v for k, v in stats.items() if k.startswith('err_'))
    if errors:
        raise RuntimeError(f'wrk saw {errors} errors')
    return stats['requests']


def tree_ticks(proc: subprocess.Popen[bytes]) -> int:
    return measure.cpu_ticks(measure.process_tree(proc.pid, measure.scan_procs()))


def load_together(procs: list[subprocess.Popen[bytes]], ports: list[int], sc: Scenario, seconds: int) -> list[dict]:
    """Both servers under load for ``seconds``; per server its responses and CPU ticks over that window."""
    before = [tree_ticks(p) for p in procs]
    started = time.monotonic()
    wrks = [start_wrk(port, sc, seconds) for port in ports]
    requests = [wrk_requests(w) for w in wrks]
    elapsed = time.monotonic() - started
    after = [tree_ticks(p) for p in procs]
    return [
        {'requests': n, 'ticks': t1 - t0, 'elapsed_s': round(elapsed, 2)}
        for n, t0, t1 in zip(requests, before, after, strict=True)
    ]


def load_in_turn(procs: list[subprocess.Popen[bytes]], ports: list[int], sc: Scenario, seconds: int) -> list[dict]:
    """Each server under load alone for ``seconds``, one after the other; per server its responses and CPU ticks."""
    figures = []
    for proc, port in zip(procs, ports, strict=True):
        figures.extend(load_together([proc], [port], sc, seconds))
    return figures


def record(pair: list[Server], sc: Scenario, figures: list[dict]) -> dict[str, Any]:
    rec: dict[str, Any] = {'ts': dt.datetime.now().isoformat(timespec='seconds'), 'scenario': sc.name}
    for server, fig in zip(pair, figures, strict=True):
        fig['cpu_us_per_resp'] = round(fig['ticks'] / measure.CLK_TCK * 1e6 / fig['requests'], 2)
        rec[server.name] = fig
    return rec


def run_pair(py: str, pair: list[Server], sc: Scenario, a: argparse.Namespace, logdir: Path) -> list[dict[str, Any]]:
    """Starts both servers, warms them up, then measures: once with both under load at once, or ``--rounds`` times in
    turn with the order alternating (``--in-turn``). One record per round."""
    ports = [measure.free_port() for _ in pair]
    while ports[0] == ports[1]:
        ports[1] = measure.free_port()
    procs: list[subprocess.Popen[bytes]] = []
    logs = [(logdir / f'{s.name}.{sc.name}.log').open('ab') for s in pair]
    records = []
    try:
        for server, port, log in zip(pair, ports, logs, strict=True):
            procs.append(measure.start_server(server.argv(py, sc.target, port, 1), log, sc))
        for proc, port in zip(procs, ports, strict=True):
            err = measure.wait_ready(proc, sc, port, 30)
            if err:
                raise RuntimeError(err)
        load = load_in_turn if a.in_turn else load_together
        load(procs, ports, sc, WARMUP_S)
        for rnd in range(a.rounds if a.in_turn else 1):
            order = [1, 0] if rnd % 2 else [0, 1]
            figures = load([procs[i] for i in order], [ports[i] for i in order], sc, a.duration)
            records.append(record([pair[i] for i in order], sc, figures))
    finally:
        for proc in procs:
            measure.stop_server(proc)
        for log in logs:
            log.close()
    return records


def report(records: list[dict], peers: list[str], scenarios: list[Scenario], a: argparse.Namespace) -> str:
    if a.in_turn:
        method = (
            f'`bench/pair.py --in-turn --rounds {a.rounds} --duration {a.duration}`. rustwsgi and one peer started '
            'side by side on CPU 0 and loaded one after the other, order alternating, by `wrk -t1` on CPU 1 (64 '
            'connections unless the scenario says otherwise); CPU time per response of each from /proc (its whole '
            'process tree). Each round pairs two back-to-back runs, so the responses ratio is the ratio of req/s.'
        )
    else:
        method = (
            f'`bench/pair.py --rounds {a.rounds} --duration {a.duration}`. rustwsgi and one peer on CPU 0 at the same '
            'time, one `wrk -t1` each on CPU 1 (64 connections unless the scenario says otherwise); CPU time per '
            'response of each over the same seconds (its whole process tree, from /proc). Absolute figures are of '
            'two servers sharing a core; the ratio is the result.'
        )
    lines = [
        '# Head to head',
        '',
        f'{dt.date.today()}; {method} Below 1: rustwsgi spends less CPU per response.',
        '',
        '| scenario | peer | rustwsgi CPU µs/resp | peer CPU µs/resp | rustwsgi ÷ peer, each round | median | '
        'responses rustwsgi ÷ peer |',
        '|---|---|---:|---:|---|---:|---:|',
    ]
    for sc in scenarios:
        for peer in peers:
            recs = [r for r in records if r['scenario'] == sc.name and peer in r and SUBJECT in r]
            if not recs:
                lines.append(f'| {sc.name} | {peer} | - | - | no round completed | - | - |')
                continue
            ratios = [r[SUBJECT]['cpu_us_per_resp'] / r[peer]['cpu_us_per_resp'] for r in recs]
            counts = [r[SUBJECT]['requests'] / r[peer]['requests'] for r in recs]
            ours = statistics.median(r[SUBJECT]['cpu_us_per_resp'] for r in recs)
            theirs = statistics.median(r[peer]['cpu_us_per_resp'] for r in recs)
            each = ', '.join(f'{x:.3f}' for x in ratios)
            lines.append(
                f'| {sc.name} | {peer} | {ours:.2f} | {theirs:.2f} | {each} | **{statistics.median(ratios):.3f}** | '
                f'{statistics.median(counts):.3f} |'
            )
    return '\n'.join(lines) + '\n'


def main() -> int:
    a = parse_args()
    py = str(a.venv / 'bin' / 'python')
    table = server_table(py, a.baseline)
    peers = [p.strip() for p in a.peers.split(',') if p.strip()]
    if a.baseline is not None and BASELINE not in peers:
        peers.append(BASELINE)
    by_name = {s.name: s for s in SCENARIOS}
    unknown = [p for p in peers if p not in table] + [s for s in a.scenarios.split(',') if s not in by_name]
    if unknown:
        print(f'pair.py: unknown server or scenario: {", ".join(unknown)}', file=sys.stderr)
        return 2
    scenarios = [by_name[s] for s in a.scenarios.split(',')]
    spread = [sc.name for sc in scenarios if sc.spread or sc.workers != 1]
    if spread:
        print(f'pair.py: one core, one process each: not for {", ".join(spread)}', file=sys.stderr)
        return 2
    run_dir = a.out / (dt.datetime.now().strftime('%Y%m%d-%H%M%S') + '-pair')
    logdir = run_dir / 'logs'
    logdir.mkdir(parents=True)
    records: list[dict] = []
    # At once: servers restarted for each round, rounds interleaved across scenarios and peers. In turn: both kept
    # running for all the rounds of one scenario and peer, since each round is a pair of short runs.
    passes = 1 if a.in_turn else a.rounds
    for rnd in range(passes):
        for sc in scenarios:
            for peer in peers:
                pair = [table[SUBJECT], table[peer]]
                if rnd % 2:
                    pair.reverse()
                try:
                    recs = run_pair(py, pair, sc, a, logdir)
                except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                    print(f'round {rnd} {sc.name} {peer}: {e}', file=sys.stderr)
                    continue
                for i, rec in enumerate(recs):
                    rec['round'] = rnd + i
                    records.append(rec)
                    ratio = rec[SUBJECT]['cpu_us_per_resp'] / rec[peer]['cpu_us_per_resp']
                    print(
                        f'round {rnd + i} {sc.name:8s} vs {peer:18s} CPU/resp rustwsgi ÷ peer {ratio:.3f}', flush=True
                    )
    with (run_dir / 'records.jsonl').open('w') as f:
        f.writelines(json.dumps(r) + '\n' for r in records)
    text = report(records, peers, scenarios, a)
    (run_dir / 'report.md').write_text(text)
    print(text)
    print(f'wrote {run_dir}/report.md')
    return 0


if __name__ == '__main__':
    sys.exit(main())
