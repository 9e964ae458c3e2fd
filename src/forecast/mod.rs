//! Link-load forecasting: series from tables, counters, Prometheus or captures
//! ([`series`], [`prometheus`]), the bundled Abilene traffic matrices routed into link loads
//! with failure scenarios ([`abilene`]), the baselines ([`baselines`], [`ets`]) and
//! rolling-origin backtests ([`backtest`]).

pub mod abilene;
pub mod backtest;
pub mod baselines;
pub mod drift;
pub mod ets;
pub mod loads;
pub mod model;
pub mod prometheus;
pub mod series;
