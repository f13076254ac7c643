"""Medians, ratios against the best peer, the Markdown report and the PNG charts of one run.

python report.py results/RUN_ID     # re-render report.md and the charts from records.jsonl
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from registry import APP_LOOP, SCENARIOS, SUBJECT

# metric key -> (label, unit, higher is better)
METRICS: dict[str, tuple[str, str, bool]] = {
    'rps': ('req/s', 'req/s', True),
    'p50': ('p50 latency', 'ms', False),
    'p99': ('p99 latency', 'ms', False),
    'rss': ('peak RSS of the process tree', 'MiB', False),
    'us_req': ('server CPU time per response', 'µs', False),
}
SCENARIO_TITLES = {s.name: s.title for s in SCENARIOS}
# Scenarios whose req/s target is set against the app alone (issue 4); hello's is CPU per response instead.
LOOP_TARGETS = ('flask', 'django')


def _median(xs: list[Any]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(records: list[dict]) -> dict[tuple[str, str], dict[str, Any]]:
    """(server, scenario) -> medians over repetitions.

    Runs flagged noisy are used only when a cell has no clean run."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r['server'], r['scenario']), []).append(r)
    out = {}
    for key, rs in groups.items():
        skipped = next((r['skipped'] for r in rs if r.get('skipped')), None)
        good = [r for r in rs if r.get('ok')]
        use = [r for r in good if not r.get('noisy')] or good
        issues = sorted({i for r in rs for i in r.get('issues', [])})
        out[key] = {
            'skipped': skipped,
            'n': len(rs),
            'n_used': len(use),
            'only_noisy': bool(good) and all(r.get('noisy') for r in use),
            'rps': _median([r.get('rps') for r in use]),
            'mib_s': _median([r.get('mib_s') for r in use]),
            'p50': _median([r.get('p50_ms') for r in use]),
            'p99': _median([r.get('p99_ms') for r in use]),
            'rss': _median([r.get('peak_rss_mb') for r in use or rs]),
            'us_req': _median([r.get('cpu_us_per_req') for r in use]),
            'cpu': _median([r.get('server_cpu_pct') for r in use]),
            'issues': issues,
            'probe': next((r['probe'] for r in rs if r.get('probe')), None),
        }
    return out


def order_of(records: list[dict], key: str) -> list[str]:
    """Distinct values of ``key`` in first-seen order."""
    seen: list[str] = []
    for r in records:
        if r[key] not in seen:
            seen.append(r[key])
    return seen


def servers_of(records: list[dict]) -> list[str]:
    """The servers measured, in first-seen order (the app loop is no server)."""
    return [s for s in order_of(records, 'server') if s != APP_LOOP]


def app_loop_table(agg: dict, scenarios: list[str], servers: list[str]) -> list[str]:
    """rustwsgi and the best peer against the app's own rate in a loop with no server (the framework's limit).

    The issue's target for the framework apps: req/s at least the lower of 1.1x the best peer and 0.95x the loop."""
    rows = [sc for sc in scenarios if (APP_LOOP, sc) in agg]
    if not rows:
        return []
    lines = [
        '## Against the app alone',
        '',
        'The app called in a loop on the server core with no server and no socket (`bench/apploop.py`): a '
        'fresh environ and empty `wsgi.input` a call, the body iterated and closed. Target for the framework apps '
        '(issue 4): req/s ≥ min(1.1 x best peer, 0.95 x app loop).',
        '',
        '| scenario | app loop req/s | app loop CPU µs/call | rustwsgi req/s | rustwsgi ÷ loop | best peer ÷ loop '
        '| target req/s | met |',
        '|---|---:|---:|---:|---:|---:|---:|---|',
    ]
    for sc in rows:
        loop = agg[(APP_LOOP, sc)]
        mine = (agg.get((SUBJECT, sc)) or {}).get('rps')
        ref = best_peer(agg, sc, 'rps', servers)
        if not loop['rps']:
            lines.append(f'| {sc} | FAIL | - | - | - | - | - | - |')
            continue
        target = (min(1.1 * ref[1], 0.95 * loop['rps']) if ref else 0.95 * loop['rps']) if sc in LOOP_TARGETS else None
        met = '-' if mine is None or target is None else ('yes' if mine >= target else 'no')
        lines.append(
            f'| {sc} | {_fmt(loop["rps"])} | {_fmt(loop["us_req"], "{:.1f}")} | {_fmt(mine)} '
            f'| {_fmt(mine and mine / loop["rps"], "{:.2f}")} '
            f'| {_fmt(ref[1] / loop["rps"], "{:.2f}") if ref else "-"} ({ref[0] if ref else "-"}) '
            f'| {_fmt(target)} | {met} |'
        )
    return [*lines, '']


def best_peer(agg: dict, scenario: str, metric: str, servers: list[str]) -> tuple[str, float] | None:
    """The peer (not rustwsgi) with the best median of ``metric`` in ``scenario``."""
    higher = METRICS[metric][2]
    vals = [
        (g[metric], s)
        for s in servers
        if not s.startswith(SUBJECT) and (g := agg.get((s, scenario))) and g.get(metric) is not None
    ]
    if not vals:
        return None
    v, s = max(vals) if higher else min(vals)
    return s, v


def _fmt(v: float | None, spec: str = '{:,.0f}') -> str:
    return '-' if v is None else spec.format(v)


def fmt_ms(v: float | None) -> str:
    """Milliseconds with two decimals below 10 ms."""
    return '-' if v is None else (f'{v:.2f}' if v < 10 else f'{v:.1f}')


def _scenario_table(agg: dict, sc: str, servers: list[str]) -> list[str]:
    ref = best_peer(agg, sc, 'rps', servers)
    lines = [
        f'### {sc}: {SCENARIO_TITLES.get(sc, sc)}',
        '',
        '| server | req/s | MiB/s | p50 ms | p99 ms | peak RSS MiB | CPU µs/resp | req/s vs best peer | runs | notes |',
        '|---|---:|---:|---:|---:|---:|---:|---:|---:|---|',
    ]
    for s in servers:
        g = agg.get((s, sc))
        if not g:
            continue
        if g['skipped']:
            lines.append(f'| {s} | - | - | - | - | - | - | - | 0 | {g["skipped"]} |')
            continue
        ratio = f'{g["rps"] / ref[1]:.2f}' if ref and g['rps'] else '-'
        runs = f'{g["n_used"]}/{g["n"]}' + (' noisy' if g['only_noisy'] else '')
        lines.append(
            f'| {s} | {_fmt(g["rps"]) if g["rps"] else "FAIL"} | {_fmt(g["mib_s"], "{:,.1f}")} | {fmt_ms(g["p50"])} '
            f'| {fmt_ms(g["p99"])} | {_fmt(g["rss"], "{:.1f}")} | {_fmt(g["us_req"], "{:.1f}")} | {ratio} | {runs} '
            f'| {"; ".join(g["issues"])[:200]} |'
        )
    return [*lines, '']


def subject_ratios(agg: dict, scenarios: list[str], servers: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """Per scenario, rustwsgi's median / the best peer's median for every metric (None where unknown)."""
    rows = []
    for sc in scenarios:
        g = agg.get((SUBJECT, sc))
        row: dict[str, Any] = {'skipped': g['skipped'] if g else 'not measured'}
        for m in METRICS:
            ref = best_peer(agg, sc, m, servers)
            mine = g.get(m) if g else None
            row[m] = (mine / ref[1], ref[0]) if ref and mine and ref[1] else None
        rows.append((sc, row))
    return rows


def summary_table(agg: dict, scenarios: list[str], servers: list[str]) -> list[str]:
    lines = [
        f'## {SUBJECT} / best peer',
        '',
        'Each cell: rustwsgi median ÷ the best peer median for that figure (best peer named). '
        'req/s: above 1 is better; latency, RSS and CPU per response: below 1 is better.',
        '',
        '| scenario | ' + ' | '.join(METRICS[m][0] for m in METRICS) + ' |',
        '|---|' + '---:|' * len(METRICS),
    ]
    for sc, row in subject_ratios(agg, scenarios, servers):
        if row['skipped'] or all(row[m] is None for m in METRICS):
            note = row['skipped'] or 'no usable runs'
            lines.append(f'| {sc} | ' + ' | '.join(note if i == 0 else '-' for i in range(len(METRICS))) + ' |')
            continue
        cells = [f'{row[m][0]:.2f} ({row[m][1]})' if row[m] else '-' for m in METRICS]
        lines.append(f'| {sc} | ' + ' | '.join(cells) + ' |')
    return [*lines, '']


def _probe_table(records: list[dict], scenarios: list[str], servers: list[str]) -> list[str]:
    lines = [
        '## Correctness probes (raw-socket HTTP/1.1 client, before load)',
        '',
        'Response framing; `ka` = a second request on the same connection was answered.',
        '',
        '| server | ' + ' | '.join(scenarios) + ' |',
        '|---|' + '---|' * len(scenarios),
    ]
    for s in servers:
        row = []
        for sc in scenarios:
            rs = [r for r in records if r['server'] == s and r['scenario'] == sc]
            p = next((r['probe'] for r in rs if r.get('probe')), None)
            if not rs or any(r.get('skipped') for r in rs):
                row.append('·')
            elif p is None:
                row.append('no start')
            elif p['ok']:
                row.append(f'{p["framing"]}, {"ka" if p["keepalive"] else "no ka"}')
            else:
                row.append('FAIL: ' + str(p.get('error', ''))[:60])
        lines.append(f'| {s} | ' + ' | '.join(row) + ' |')
    return [*lines, '']


def machine_lines(meta: dict[str, Any]) -> list[str]:
    """The run's date, machine, versions and settings as Markdown bullets."""
    versions = ', '.join(f'{k} {v}' for k, v in meta.get('versions', {}).items())
    return [
        f'- date: {meta.get("date")}; rustwsgi commit {meta.get("commit")}',
        f'- machine: {meta.get("cpu")}, {meta.get("cores")} cores, {meta.get("mem")}, Linux {meta.get("kernel")}, '
        f'Python {meta.get("python")}, {meta.get("wrk")}',
        f'- versions: {versions}',
        f'- settings: server pinned to CPU {meta.get("server_cpu")}, `wrk -t1 -c{meta.get("conc")}` pinned to CPU '
        f'{meta.get("client_cpu")}; {meta.get("reps")} repetition(s) of {meta.get("duration")} s after a '
        f'{meta.get("warmup")} s warm-up, order reversed every other scenario/repetition (`hello-c256`: '
        '`wrk -c256`)',
    ]


def noisy_cells(records: list[dict]) -> int:
    """Scenario/server cells whose every measured run was noisy (their medians rest on disturbed runs only)."""
    runs: dict[tuple[str, str], list[bool]] = {}
    for r in records:
        if not r.get('skipped'):
            runs.setdefault((r.get('scenario', ''), r.get('server', '')), []).append(bool(r.get('noisy')))
    return sum(1 for flags in runs.values() if all(flags))


def render_markdown(records: list[dict], meta: dict[str, Any]) -> str:
    """The whole report."""
    agg = summarize(records)
    servers = servers_of(records)
    scenarios = order_of(records, 'scenario')
    measured = [r for r in records if not r.get('skipped')]
    noisy = sum(1 for r in measured if r.get('noisy'))
    lines = [f'# rustwsgi benchmark {meta.get("run_id", "")}', '', *machine_lines(meta)]
    lines.append(
        f'- {len(measured)} measurements, {noisy} flagged noisy (other processes used more than 10 % of a core '
        'during the run); medians use the clean runs of a cell when it has any'
    )
    if meta.get('quick') or noisy_cells(records):
        lines.append('- **short or noisy run: these numbers check that the suite works; they are not for publication**')
    lines += [
        '',
        "req/s and latency from wrk; peak RSS = maximum over 0.2 s samples of the summed RSS of the server's "
        'process tree; CPU µs/resp = utime+stime of the process tree (from /proc) during the measured run '
        '÷ responses. Best peer = the best server other than rustwsgi for that figure.',
        '',
        *[f'![{m}]({m}.png)' for m in ('rps', 'latency', 'cpu', 'rss', 'ratios')],
        '',
        *summary_table(agg, scenarios, servers),
        *app_loop_table(agg, scenarios, servers),
        '## Per scenario',
        '',
    ]
    for sc in scenarios:
        lines += _scenario_table(agg, sc, servers)
    lines += _probe_table(records, scenarios, servers)
    notes = meta.get('notes', {})
    lines += ['## Servers', '', *[f'- `{s}`: {notes.get(s, "")}' for s in servers], '']
    return '\n'.join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Charts
# ----------------------------------------------------------------------------------------------------------------
SUBJECT_COLOR = '#d9480f'
PEER_COLOR = '#4c6ef5'
BETTER_COLOR = '#2f9e44'
WORSE_COLOR = '#e03131'
LIGHT = {SUBJECT_COLOR: '#ffa94d', PEER_COLOR: '#a5b4fc'}


def _grid(plt: Any, n: int, bars: int, width: float = 4.6) -> tuple[Any, list[Any]]:
    """A figure with ``n`` panels, at most 4 a row, tall enough for ``bars`` bars a panel."""
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    height = rows * (max(1.6, 0.3 * bars) + 1.0) + 0.9
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _bars(
    ax: Any,
    labels: list[str],
    series: list[list[float | None]],
    colors: list[str],
    missing: list[str],
    fmt: Callable[[float], str],
    floor: float = 0.0,
    suffix: list[str] | None = None,
) -> None:
    """Horizontal bars, one row per label; a second series is drawn lighter, beside the first.

    ``missing[i]`` is written in row i when it has no value, ``suffix[i]`` after its value label;
    ``floor`` is the least x range shown."""
    h = 0.8 / len(series)
    top = max([v for vs in series for v in vs if v is not None] + [floor]) or 1.0
    for j, vs in enumerate(series):
        for i, v in enumerate(vs):
            y = i - 0.4 + h * (j + 0.5)
            if v is None:
                if j == 0:
                    ax.text(
                        0.01, i, missing[i], va='center', fontsize=7, color='grey', transform=ax.get_yaxis_transform()
                    )
                continue
            ax.barh(y, v, height=h * 0.9, color=colors[i] if j == 0 else LIGHT.get(colors[i], colors[i]))
            ax.text(v + top * 0.01, y, fmt(v) + (suffix[i] if suffix and j == 0 else ''), va='center', fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.set_xlim(0, top * 1.3)
    ax.tick_params(axis='x', labelsize=7)
    ax.grid(axis='x', alpha=0.3)


def _compact(v: float) -> str:
    return f'{v / 1000:.1f}k' if v >= 10000 else (f'{v:.0f}' if v >= 100 else f'{v:.2g}')


def write_charts(records: list[dict], meta: dict[str, Any], outdir: Path) -> list[Path]:
    """rps.png, latency.png, cpu.png, rss.png (one panel per scenario) and ratios.png; returns the paths."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    agg = summarize(records)
    servers = servers_of(records)
    scenarios = order_of(records, 'scenario')
    subtitle = f'{meta.get("run_id", "")} · {meta.get("cpu", "")} · server on 1 core, wrk -c{meta.get("conc")}'
    if meta.get('quick') or noisy_cells(records):
        subtitle += ' · short/noisy run, not for publication'
    colors = [SUBJECT_COLOR if s.startswith(SUBJECT) else PEER_COLOR for s in servers]
    paths = []
    charts = [
        ('rps', 'Requests per second (higher is better)', ['rps']),
        ('latency', 'Latency p50 (dark) and p99 (light), ms (lower is better)', ['p50', 'p99']),
        ('cpu', 'Server CPU time per response, µs (lower is better)', ['us_req']),
        ('rss', 'Peak RSS of the server process tree, MiB (lower is better)', ['rss']),
    ]
    for name, title, metrics in charts:
        fig, axes = _grid(plt, len(scenarios), len(servers) * len(metrics))
        for ax, sc in zip(axes, scenarios, strict=True):
            cells = [agg.get((s, sc)) or {} for s in servers]
            missing = [(g.get('skipped') or 'failed').split(':')[0] if g else 'not run' for g in cells]
            _bars(ax, servers, [[g.get(m) for g in cells] for m in metrics], colors, missing, _compact)
            ax.set_title(f'{sc}: {SCENARIO_TITLES.get(sc, sc)}', fontsize=9)
        fig.suptitle(f'{title}\n{subtitle}', fontsize=10)
        fig.tight_layout()
        paths.append(outdir / f'{name}.png')
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    paths.append(_ratio_chart(plt, agg, scenarios, servers, subtitle, outdir))
    return paths


def _ratio_chart(plt: Any, agg: dict, scenarios: list[str], servers: list[str], subtitle: str, outdir: Path) -> Path:
    rows = subject_ratios(agg, scenarios, servers)
    labels = [sc for sc, _ in rows]
    metrics = ['rps', 'p99', 'us_req', 'rss']
    fig, axes = _grid(plt, len(metrics), len(scenarios))
    for ax, m in zip(axes, metrics, strict=True):
        higher = METRICS[m][2]
        vals = [row[m][0] if row[m] else None for _, row in rows]
        colors = [BETTER_COLOR if v is not None and (v >= 1) == higher else WORSE_COLOR for v in vals]
        missing = [(row['skipped'] or 'no result').split(':')[0] for _, row in rows]
        peers = [f' vs {row[m][1]}' if row[m] else '' for _, row in rows]
        _bars(ax, labels, [vals], colors, missing, lambda v: f'{v:.2f}', floor=1.0, suffix=peers)
        ax.axvline(1.0, color='black', linewidth=0.8)
        ax.set_title(f'{METRICS[m][0]}\n({"higher" if higher else "lower"} is better for rustwsgi)', fontsize=9)
    fig.suptitle(f'rustwsgi ÷ best peer, per scenario (green: rustwsgi better)\n{subtitle}', fontsize=10)
    fig.tight_layout()
    path = outdir / 'ratios.png'
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def load(run_dir: Path) -> tuple[list[dict], dict[str, Any]]:
    """Records and metadata of a run directory."""
    records = [json.loads(line) for line in (run_dir / 'records.jsonl').read_text().splitlines() if line.strip()]
    meta = json.loads((run_dir / 'meta.json').read_text())
    return records, meta


def write_report(run_dir: Path) -> Path:
    """(Re-)write report.md and the charts of a run directory; returns the report's path."""
    records, meta = load(run_dir)
    write_charts(records, meta, run_dir)
    path = run_dir / 'report.md'
    path.write_text(render_markdown(records, meta) + '\n')
    return path


if __name__ == '__main__':
    for arg in sys.argv[1:]:
        print(write_report(Path(arg)))
