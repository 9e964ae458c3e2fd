#!/usr/bin/env python3
"""Cross-check netfm's forecasting baselines against Python statsforecast on Abilene.

For each Abilene week (1 = AbileneTM, 2 = AbileneTM2) this script

1. gets the 30 link-load series from netfm itself
   (`netfm forecast series --dataset abilene --week N --out FILE.csv`, long format
   `timestamp,link,value`, Mbit/s, 2016 five-minute intervals, empty value = missing),
   so both sides forecast exactly the same loads;
2. runs statsforecast's Naive, SeasonalNaive(288), AutoETS(season_length=1, model="ZZN")
   and MSTL(288, trend_forecaster=AutoETS(model="ZZN")) through
   `StatsForecast.cross_validation(h=12, step_size=12, n_windows=48, level=[80],
   refit=False)`: each model is fitted once per link on the first 5 days (1440
   intervals) and then run forward with those parameters over the last 2 days; the 48
   windows start at the end of training and every hour after it (cutoffs 1439, 1451, ...,
   2003; the last window ends at the series' last interval); the script checks this;
3. scores step 1 ("5m") and step 12 ("1h") over every (link, origin) whose target is
   observed: MAE, RMSE, sMAPE = 100*mean(2|e|/(|y|+|yhat|)) (a term is 0 where both are
   0), MASE = mean(|e|/s_link) with s_link the link's one-step naive MAE on the 5 training
   days, coverage80 = share of targets inside the 80% interval [lo-80, hi-80];
4. runs `netfm forecast backtest --dataset abilene --week N --models
   naive,seasonal_naive,ets,mstl --json OUT.json -q` and prints one Markdown table per week
   with both sides (MAE, relative MAE difference, MASE, coverage80), and writes all
   numbers to --json.

With --refit, AutoETS is also run with refit=True (re-estimated at each of the 48 origins
on all data up to it; about 1440 ETS fits a week, a few minutes on 2 cores).

How statsforecast's refit=False ("fit once, then forward") lines up with netfm's "fit on
the training days, filter forward": the point forecasts follow the same recipe (MSTL
re-decomposes the history up to each origin on both sides, with the trend ETS's parameters
fixed), but statsforecast re-estimates the interval width at each origin on all data up
to it (Naive's and SeasonalNaive's residual sigma, AutoETS's sigma2), where netfm keeps the
training days' sigma: SeasonalNaive's coverage differs most. "ZZN" lets AutoETS pick
multiplicative errors, netfm's ETS is additive-error only (ANN, AAN, AAdN):
--ets-model AZN compares like with like. The components AutoETS chose on the training days
are printed and kept in the JSON.
Missing values (none in the Abilene matrices) are filled by linear interpolation for
statsforecast's input only, since it needs complete series; they are never scored.

Run time on 2 shared cores: about 8 minutes a week, nearly all of it statsforecast's MSTL
(1440 statsmodels STL decompositions); the other models take seconds, netfm's backtest
about 2 s; --refit adds about 2.5 minutes a week. --models naive,seasonal_naive,ets skips
MSTL (under half a minute for both weeks).

Needs: pip install statsforecast pandas (and a built netfm: cargo build --release).
Run from the repository root:

    python3 benches/forecast_statsforecast.py --json /tmp/forecast_statsforecast.json
    python3 benches/forecast_statsforecast.py --weeks 1 --refit --netfm target/release/netfm
"""
import argparse
import collections
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent

TRAIN = 1440  # 5 days of five-minute intervals
TEST = 576  # 2 days
H = 12  # one hour ahead
STEP = 12  # a new origin every hour
N_WINDOWS = 48
SEASON = 288  # one day
LEVEL = 80
STEPS = {1: "5m", 12: "1h"}
MODELS = ("naive", "seasonal_naive", "ets", "mstl")
SF_NAME = {
    "naive": "Naive",
    "seasonal_naive": "SeasonalNaive",
    "ets": "AutoETS",
    "mstl": "MSTL",
}


def make_model(name, ets_model, alias=None):
    from statsforecast.models import MSTL, AutoETS, Naive, SeasonalNaive

    alias = alias or SF_NAME[name]
    if name == "naive":
        return Naive(alias=alias)
    if name == "seasonal_naive":
        return SeasonalNaive(season_length=SEASON, alias=alias)
    if name == "ets":
        return AutoETS(season_length=1, model=ets_model, alias=alias)
    if name == "mstl":
        return MSTL(
            season_length=SEASON,
            trend_forecaster=AutoETS(season_length=1, model=ets_model),
            alias=alias,
        )
    raise ValueError(name)


# ---------------------------------------------------------------- netfm side


def run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stderr.strip()}"
        )
    return proc


def netfm_series(netfm, week, out_csv):
    run([netfm, "forecast", "series", "--dataset", "abilene", "--week", str(week),
         "--out", str(out_csv)])


def netfm_backtest(netfm, week, models, out_json):
    t0 = time.perf_counter()
    run([netfm, "forecast", "backtest", "--dataset", "abilene", "--week", str(week),
         "--models", ",".join(models), "--json", str(out_json), "-q"])
    secs = time.perf_counter() - t0
    with open(out_json) as f:
        recs = json.load(f)
    if isinstance(recs, dict):  # {"records": [...], "failure": [...], "inputs": [...]}
        recs = recs.get("records", [])
    return recs, secs


# ------------------------------------------------------------------- series


def load_series(csv_path):
    """Long CSV -> (values T x L with NaN for missing, timestamps, link ids)."""
    df = pd.read_csv(csv_path, dtype={"link": str})
    missing_cols = {"timestamp", "link", "value"} - set(df.columns)
    if missing_cols:
        raise ValueError(f"{csv_path}: missing columns {sorted(missing_cols)}")
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    links = list(dict.fromkeys(df["link"]))  # order of first appearance
    if all(l.lstrip("-").isdigit() for l in links):
        links.sort(key=int)
    wide = df.pivot(index="timestamp", columns="link", values="value")
    wide = wide.sort_index()[links]
    ts = wide.index.to_numpy(dtype=np.int64)
    if len(ts) != TRAIN + TEST:
        raise ValueError(f"{csv_path}: {len(ts)} intervals, expected {TRAIN + TEST}")
    if not np.all(np.diff(ts) == 300):
        raise ValueError(f"{csv_path}: timestamps are not every 300 s")
    return wide.to_numpy(dtype=np.float64), ts, links


def fill_for_input(y):
    """statsforecast needs complete series: interpolate gaps (input only)."""
    filled = pd.DataFrame(y).interpolate(limit_direction="both").fillna(0.0)
    return filled.to_numpy()


def naive_scale(y_obs):
    """Per-link in-sample one-step naive MAE on the training days (observed pairs)."""
    tr = y_obs[:TRAIN]
    d = np.abs(tr[1:] - tr[:-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        s = np.nanmean(d, axis=0)
    return np.where(np.isfinite(s) & (s > 0), s, 1.0)  # 1 where undefined, as netfm


# --------------------------------------------------------- statsforecast side


def sf_cross_validation(y_in, links, model_names, ets_model, refit, n_jobs):
    """Run cross_validation per model; returns {name: (frame, seconds)}."""
    from statsforecast import StatsForecast

    T, L = y_in.shape
    df = pd.DataFrame({
        "unique_id": np.repeat(np.array(links, dtype=object), T),
        "ds": np.tile(np.arange(T, dtype=np.int64), L),
        "y": y_in.T.reshape(-1),
    })
    out = {}
    for name in model_names:
        sf = StatsForecast(models=[make_model(name, ets_model)], freq=1, n_jobs=n_jobs)
        t0 = time.perf_counter()
        cv = sf.cross_validation(df=df, h=H, step_size=STEP, n_windows=N_WINDOWS,
                                 level=[LEVEL], refit=refit)
        out[name] = (cv.reset_index() if "unique_id" not in cv.columns else cv,
                     time.perf_counter() - t0)
    return out


def check_windows(cv, T):
    cutoffs = np.sort(cv["cutoff"].unique())
    want = np.arange(TRAIN - 1, T - H, STEP)
    if len(cutoffs) != N_WINDOWS or not np.array_equal(cutoffs, want):
        raise AssertionError(f"cutoffs {cutoffs[:3]}..{cutoffs[-3:]} != netfm origins")
    if cv["ds"].max() != T - 1:
        raise AssertionError("last window does not end at the series' end")
    if not (cv["ds"] - cv["cutoff"]).between(1, H).all():
        raise AssertionError("forecast steps outside 1..h")


def score(cv, alias, y_obs, links, scale):
    """Metrics per step from a cross_validation frame, against the observed series."""
    link_idx = {l: i for i, l in enumerate(links)}
    li = cv["unique_id"].astype(str).map(link_idx).to_numpy()
    ds = cv["ds"].to_numpy(dtype=np.int64)
    step = ds - cv["cutoff"].to_numpy(dtype=np.int64)
    y = y_obs[ds, li]  # NaN where the target is missing
    yhat = cv[alias].to_numpy(dtype=np.float64)
    lo = cv[f"{alias}-lo-{LEVEL}"].to_numpy(dtype=np.float64)
    hi = cv[f"{alias}-hi-{LEVEL}"].to_numpy(dtype=np.float64)
    s = scale[li]
    res = {}
    for k, label in STEPS.items():
        m = (step == k) & ~np.isnan(y)
        e = y[m] - yhat[m]
        ae = np.abs(e)
        den = np.abs(y[m]) + np.abs(yhat[m])
        sm = np.where(den > 0, 2 * ae / np.where(den > 0, den, 1), 0.0)
        res[label] = {
            "step": k,
            "mae": float(ae.mean()),
            "rmse": float(np.sqrt(np.mean(e * e))),
            "smape": float(100 * sm.mean()),
            "mase": float(np.mean(ae / s[m])),
            "coverage80": float(np.mean((y[m] >= lo[m]) & (y[m] <= hi[m]))),
            "points": int(m.sum()),
            "nonfinite_forecasts": int((~np.isfinite(yhat[m])).sum()),
        }
    return res


def ets_components(y_in, ets_model, plain_ets=True, mstl_trend=True):
    """Which ETS form AutoETS picks on each link's training days (and MSTL's trend)."""
    from statsforecast.models import MSTL, AutoETS

    plain, trend = collections.Counter(), collections.Counter()
    for j in range(y_in.shape[1]):
        tr = y_in[:TRAIN, j]
        try:
            if plain_ets:
                plain[AutoETS(season_length=1, model=ets_model).fit(tr).model_["components"]] += 1
        except Exception as err:  # noqa: BLE001 - report, do not stop the bench
            plain[f"error: {err}"] += 1
        try:
            if mstl_trend:
                m = MSTL(season_length=SEASON,
                         trend_forecaster=AutoETS(season_length=1, model=ets_model)).fit(tr)
                trend[m.trend_forecaster.model_["components"]] += 1
        except Exception as err:  # noqa: BLE001
            trend[f"error: {err}"] += 1
    return dict(plain.most_common()), dict(trend.most_common())


# ------------------------------------------------------------------ report


def fmt(v, spec=".3f"):
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def table(week, sf_recs, nf_recs):
    nf = {(r.get("model"), r.get("horizon")): r for r in nf_recs}
    lines = [
        f"### Abilene week {week}",
        "",
        "MAE diff = (statsforecast - netfm) / netfm; intervals at 80%.",
        "",
        "| model | horizon | MAE netfm | MAE statsforecast | MAE diff | MASE netfm / sf "
        "| coverage80 netfm / sf | points netfm / sf |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sf_recs:
        n = nf.get((r["model"], r["horizon"]), {})
        nmae = n.get("mae")
        diff = "n/a" if nmae in (None, 0) else f"{100 * (r['mae'] - nmae) / nmae:+.1f}%"
        lines.append(
            f"| {r['model']} ({r['sf_model']}) | {r['horizon']} | {fmt(nmae)} | {fmt(r['mae'])} "
            f"| {diff} | {fmt(n.get('mase'))} / {fmt(r['mase'])} "
            f"| {fmt(n.get('coverage80'))} / {fmt(r['coverage80'])} "
            f"| {n.get('points', 'n/a')} / {r['points']} |"
        )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--netfm", default=str(ROOT / "target" / "release" / "netfm"))
    ap.add_argument("--weeks", default="1,2", help="comma list of 1 (AbileneTM), 2 (AbileneTM2)")
    ap.add_argument("--json", help="write every number here")
    ap.add_argument("--refit", action="store_true",
                    help="also run AutoETS with refit=True (re-fit at every origin)")
    ap.add_argument("--ets-model", default="ZZN",
                    help='AutoETS model string for ets and MSTL\'s trend (default "ZZN")')
    ap.add_argument("--models", default=",".join(MODELS),
                    help="comma list of naive,seasonal_naive,ets,mstl (mstl is the slow one)")
    ap.add_argument("--jobs", type=int, default=1, help="statsforecast n_jobs (default 1)")
    ap.add_argument("--skip-netfm-backtest", action="store_true",
                    help="only the statsforecast side (series still come from netfm)")
    args = ap.parse_args()

    warnings.filterwarnings("ignore", category=FutureWarning)
    weeks = [int(w) for w in args.weeks.split(",") if w.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(models) - set(MODELS)
    if unknown:
        sys.exit(f"unknown models {sorted(unknown)}; known: {','.join(MODELS)}")
    report = {
        "config": {
            "train": TRAIN, "test": TEST, "h": H, "step_size": STEP, "n_windows": N_WINDOWS,
            "season_length": SEASON, "level": LEVEL, "ets_model": args.ets_model,
            "models": models,
            "netfm": args.netfm,
        },
        "weeks": {},
    }
    try:
        import statsforecast
        report["config"]["statsforecast"] = statsforecast.__version__
    except ImportError:
        sys.exit("needs statsforecast: pip install statsforecast pandas")

    with tempfile.TemporaryDirectory(prefix="netfm-sf-") as tmp:
        for week in weeks:
            csv = Path(tmp) / f"series_w{week}.csv"
            netfm_series(args.netfm, week, csv)
            y_obs, ts, links = load_series(csv)
            n_missing = int(np.isnan(y_obs).sum())
            y_in = fill_for_input(y_obs)
            scale = naive_scale(y_obs)

            runs = sf_cross_validation(y_in, links, models, args.ets_model, False, args.jobs)
            sf_recs, timing = [], {}
            for name in models:
                cv, secs = runs[name]
                check_windows(cv, len(ts))
                timing[name] = round(secs, 2)
                for label, r in score(cv, SF_NAME[name], y_obs, links, scale).items():
                    sf_recs.append({"model": name, "sf_model": SF_NAME[name], "horizon": label,
                                    "week": week, "refit": False, **r})
            refit_recs = []
            if args.refit:
                cv, secs = sf_cross_validation(y_in, links, ["ets"], args.ets_model, True,
                                               args.jobs)["ets"]
                check_windows(cv, len(ts))
                timing["ets_refit"] = round(secs, 2)
                for label, r in score(cv, "AutoETS", y_obs, links, scale).items():
                    refit_recs.append({"model": "ets", "sf_model": "AutoETS (refit=True)",
                                       "horizon": label, "week": week, "refit": True, **r})
            t0 = time.perf_counter()
            comp_ets, comp_trend = ets_components(y_in, args.ets_model, "ets" in models,
                                                  "mstl" in models)
            timing["ets_components"] = round(time.perf_counter() - t0, 2)

            nf_recs, nf_secs, nf_err = [], None, None
            if not args.skip_netfm_backtest:
                try:
                    nf_recs, nf_secs = netfm_backtest(args.netfm, week, models,
                                                      Path(tmp) / f"bt{week}.json")
                    nf_recs = [r for r in nf_recs if str(r.get("week", week)) == str(week)]
                except Exception as err:  # noqa: BLE001 - still print statsforecast's side
                    nf_err = str(err)

            print(table(week, sf_recs + refit_recs, nf_recs))
            print()
            print(f"series: {len(ts)} intervals x {len(links)} links, {n_missing} missing "
                  f"(interpolated for statsforecast's input, not scored)")
            print("statsforecast seconds: " + ", ".join(f"{k} {v}" for k, v in timing.items())
                  + (f"; netfm backtest {nf_secs:.2f} s" if nf_secs is not None else ""))
            print(f"AutoETS({args.ets_model}) picked on the training days: {comp_ets}; "
                  f"MSTL trend: {comp_trend}")
            if nf_err:
                print(f"netfm backtest: {nf_err}")
            print()
            report["weeks"][str(week)] = {
                "statsforecast": sf_recs + refit_recs,
                "netfm": nf_recs,
                "netfm_error": nf_err,
                "seconds": {"statsforecast": timing, "netfm_backtest": nf_secs},
                "ets_components": comp_ets,
                "mstl_trend_components": comp_trend,
                "missing_values": n_missing,
                "links": links,
            }

    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
