//! Per-link loads from origin-destination demands routed over a topology, as OSPF routes
//! them: shortest paths by link weight, traffic split evenly over the equal-cost next hops
//! at every router (ECMP, per hop). And failure scenarios: links go down at a time, the
//! demands are rerouted over what remains, and demand with no path left is counted.
//!
//! The bundled Abilene data (`datasets/abilene/`, see its PROVENANCE.md): a 12-router,
//! 30-directed-link topology with OSPF weights and two measured weeks of 5-minute 12×12
//! traffic matrices. A matrix entry is a volume in units of 100 bytes per 300 s, so
//! `x · 100 · 8 / 300` bit/s; loads here are in Mbit/s. The diagonal (a router's traffic
//! to itself) crosses no link and is left out.

use super::series::Panel;
use anyhow::{bail, Context};
use std::path::Path;

/// Five minutes.
pub const STEP: i64 = 300;

/// One directed link.
#[derive(Clone, Debug, PartialEq)]
pub struct Link {
    pub from: usize,
    pub to: usize,
    pub weight: f64,
    /// kbit/s.
    pub capacity: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Topology {
    pub nodes: usize,
    pub links: Vec<Link>,
}

impl Topology {
    /// The topology file's format: `Node_num: N<TAB>Edge_num: E`, a header line, then one
    /// line per directed link `index source destination weight capacity(kbps)`.
    pub fn parse(text: &str) -> anyhow::Result<Topology> {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let first = lines.next().context("empty topology")?;
        let num = |key: &str| -> anyhow::Result<usize> {
            let at = first
                .find(key)
                .with_context(|| format!("no {key:?} on the first line"))?;
            first[at + key.len()..]
                .split_whitespace()
                .next()
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("{key:?} is not followed by a number"))
        };
        let (nodes, edges) = (num("Node_num:")?, num("Edge_num:")?);
        lines.next().context("no header line")?;
        let mut links = Vec::new();
        for (i, l) in lines.enumerate() {
            let f: Vec<f64> = l
                .split_whitespace()
                .map(|s| s.parse::<f64>())
                .collect::<Result<_, _>>()
                .with_context(|| format!("link line {}: {l:?}", i + 1))?;
            if f.len() != 5 || f[0] as usize != i {
                bail!(
                    "link line {}: expected `{i} source destination weight capacity`",
                    i + 1
                );
            }
            let (from, to) = (f[1] as usize, f[2] as usize);
            if from >= nodes || to >= nodes || from == to || f[3] <= 0.0 {
                bail!("link line {}: bad endpoints or weight", i + 1);
            }
            links.push(Link {
                from,
                to,
                weight: f[3],
                capacity: f[4],
            });
        }
        if links.len() != edges {
            bail!("{} links where the header says {edges}", links.len());
        }
        Ok(Topology { nodes, links })
    }

    /// The link from `a` to `b`.
    pub fn find(&self, a: usize, b: usize) -> Option<usize> {
        self.links.iter().position(|l| l.from == a && l.to == b)
    }

    /// A name per link, `a->b`.
    pub fn link_names(&self) -> Vec<String> {
        self.links
            .iter()
            .map(|l| format!("{}->{}", l.from, l.to))
            .collect()
    }
}

/// How demands spread over links: `frac[link][od]` is the share of demand `od` (=
/// `origin·nodes + destination`) that crosses `link`, for the links that are up.
#[derive(Clone, Debug)]
pub struct Routing {
    pub frac: Vec<Vec<f64>>,
    /// Origin-destination pairs (origin ≠ destination) without any path.
    pub unroutable: Vec<usize>,
}

/// OSPF shortest-path routing with per-hop equal-cost splitting, over the links for which
/// `up` is true.
pub fn route(topo: &Topology, up: &[bool]) -> Routing {
    let n = topo.nodes;
    let mut frac = vec![vec![0.0; n * n]; topo.links.len()];
    let mut unroutable = Vec::new();
    for dst in 0..n {
        let dist = distances_to(topo, up, dst);
        // Next hops toward dst: links on a shortest path (exact: weights are integers).
        let next: Vec<Vec<usize>> = (0..n)
            .map(|u| {
                topo.links
                    .iter()
                    .enumerate()
                    .filter(|(i, l)| {
                        up[*i]
                            && l.from == u
                            && dist[l.to].is_finite()
                            && (l.weight + dist[l.to] - dist[u]).abs() <= 1e-9 * dist[u].max(1.0)
                    })
                    .map(|(i, _)| i)
                    .collect()
            })
            .collect();
        // Nodes from the farthest: a node's traffic is final once every farther node sent.
        let mut order: Vec<usize> = (0..n).filter(|&u| dist[u].is_finite()).collect();
        order.sort_by(|&a, &b| dist[b].total_cmp(&dist[a]));
        for src in 0..n {
            if src == dst {
                continue;
            }
            let od = src * n + dst;
            if !dist[src].is_finite() {
                unroutable.push(od);
                continue;
            }
            let mut at = vec![0.0; n];
            at[src] = 1.0;
            for &u in &order {
                if u == dst || at[u] == 0.0 {
                    continue;
                }
                let share = at[u] / next[u].len() as f64;
                for &li in &next[u] {
                    frac[li][od] += share;
                    at[topo.links[li].to] += share;
                }
            }
        }
    }
    unroutable.sort_unstable();
    Routing { frac, unroutable }
}

/// Shortest distances from every node to `dst` over the links that are up (Dijkstra on the
/// reversed links; ∞ where there is no path).
fn distances_to(topo: &Topology, up: &[bool], dst: usize) -> Vec<f64> {
    let n = topo.nodes;
    let mut dist = vec![f64::INFINITY; n];
    let mut done = vec![false; n];
    dist[dst] = 0.0;
    for _ in 0..n {
        let Some(u) = (0..n)
            .filter(|&u| !done[u] && dist[u].is_finite())
            .min_by(|&a, &b| dist[a].total_cmp(&dist[b]))
        else {
            break;
        };
        done[u] = true;
        for (i, l) in topo.links.iter().enumerate() {
            if up[i] && l.to == u && dist[u] + l.weight < dist[l.from] {
                dist[l.from] = dist[u] + l.weight;
            }
        }
    }
    dist
}

/// Traffic matrices: `tm[t][od]` in Mbit/s, the diagonal zeroed.
pub fn parse_matrices(text: &str, nodes: usize) -> anyhow::Result<Vec<Vec<f64>>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut row: Vec<f64> = line
            .split_whitespace()
            .map(|s| s.parse::<f64>())
            .collect::<Result<_, _>>()
            .with_context(|| format!("matrix line {}", i + 1))?;
        if row.len() != nodes * nodes {
            bail!(
                "matrix line {}: {} values, not {}",
                i + 1,
                row.len(),
                nodes * nodes
            );
        }
        for (od, x) in row.iter_mut().enumerate() {
            if !x.is_finite() || *x < 0.0 {
                bail!("matrix line {}: value {} is not a volume", i + 1, od + 1);
            }
            *x = if od / nodes == od % nodes {
                0.0
            } else {
                *x * 100.0 * 8.0 / 300.0 / 1e6
            };
        }
        out.push(row);
    }
    Ok(out)
}

/// A failure: from interval `at` on, `links` are down.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub at: usize,
    pub links: Vec<usize>,
}

/// What routing the matrices gave.
#[derive(Clone, Debug)]
pub struct Loads {
    /// One series per link, Mbit/s; a link that is down is missing (NaN) while down.
    pub panel: Panel,
    /// Demand (Mbit/s summed over intervals) that had no path, after the failure.
    pub unroutable_demand: f64,
    /// Origin-destination pairs without a path after the failure.
    pub unroutable_pairs: Vec<usize>,
}

/// Per-link loads of the matrices `tm` (one per `STEP`, the first at `start`), with an
/// optional failure.
pub fn link_loads(
    topo: &Topology,
    tm: &[Vec<f64>],
    start: i64,
    failure: Option<&Failure>,
) -> Loads {
    let all = vec![true; topo.links.len()];
    let normal = route(topo, &all);
    let failed = failure.map(|f| {
        let mut up = all.clone();
        for &l in &f.links {
            up[l] = false;
        }
        (f.at, route(topo, &up), up)
    });
    let mut values = vec![vec![0.0; tm.len()]; topo.links.len()];
    let mut unroutable_demand = 0.0;
    for (t, demand) in tm.iter().enumerate() {
        let (r, up) = match &failed {
            Some((at, r, up)) if t >= *at => (r, Some(up)),
            _ => (&normal, None),
        };
        for (l, fr) in r.frac.iter().enumerate() {
            values[l][t] = if up.is_some_and(|u| !u[l]) {
                f64::NAN
            } else {
                fr.iter().zip(demand).map(|(f, d)| f * d).sum()
            };
        }
        if up.is_some() {
            unroutable_demand += r.unroutable.iter().map(|&od| demand[od]).sum::<f64>();
        }
    }
    Loads {
        panel: Panel {
            start,
            step: STEP,
            names: topo.link_names(),
            values,
        },
        unroutable_demand,
        unroutable_pairs: failed.map(|f| f.1.unroutable).unwrap_or_default(),
    }
}

/// The bundled Abilene data: topology and the two weeks.
pub struct Abilene {
    pub topology: Topology,
    /// `AbileneTM` and `AbileneTM2`.
    pub weeks: Vec<(String, Vec<Vec<f64>>)>,
}

/// The weeks' dates are not recorded in the data; the series start at this arbitrary
/// Monday 00:00 UTC (2004-03-01) so that calendar features see whole days.
pub const WEEK_START: i64 = 1_078_099_200;

impl Abilene {
    pub fn load(dir: &Path) -> anyhow::Result<Abilene> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .with_context(|| format!("reading {}", dir.join(name).display()))
        };
        let topology = Topology::parse(&read("Abilene")?).context("the Abilene topology")?;
        let mut weeks = Vec::new();
        for name in ["AbileneTM", "AbileneTM2"] {
            let tm = parse_matrices(&read(name)?, topology.nodes)
                .with_context(|| format!("the {name} matrices"))?;
            weeks.push((name.to_string(), tm));
        }
        Ok(Abilene { topology, weeks })
    }

    /// The bundled copy: `datasets/abilene` of the source tree, or beside the executable.
    pub fn bundled_dir() -> anyhow::Result<std::path::PathBuf> {
        let mut candidates = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/abilene")];
        if let Ok(exe) = std::env::current_exe() {
            if let Some(d) = exe.parent() {
                candidates.push(d.join("datasets/abilene"));
            }
        }
        candidates
            .into_iter()
            .find(|d| d.join("Abilene").is_file())
            .context("the bundled Abilene data (datasets/abilene) is not here: pass --data DIR")
    }

    /// The link with the highest mean load in `week`'s first `train` intervals.
    pub fn busiest_link(&self, week: usize, train: usize) -> usize {
        let loads = link_loads(
            &self.topology,
            &self.weeks[week].1[..train],
            WEEK_START,
            None,
        );
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        (0..loads.panel.values.len())
            .max_by(|&a, &b| mean(&loads.panel.values[a]).total_cmp(&mean(&loads.panel.values[b])))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A square 0-1-2-3-0 with weights 1 and a pendant node 4 hanging off 0:
    ///
    ///   0 —1— 1
    ///   |     |
    ///   1     1
    ///   |     |
    ///   3 —1— 2        4 —1— 0
    fn square() -> Topology {
        let mut links = Vec::new();
        for (a, b) in [(0, 1), (1, 2), (2, 3), (3, 0), (4, 0)] {
            for (x, y) in [(a, b), (b, a)] {
                links.push(Link {
                    from: x,
                    to: y,
                    weight: 1.0,
                    capacity: 1e6,
                });
            }
        }
        Topology { nodes: 5, links }
    }

    #[test]
    fn ecmp_splits_evenly_per_hop() {
        let t = square();
        let r = route(&t, &vec![true; t.links.len()]);
        let od = 2; // 0 -> 2: two equal paths, via 1 and via 3.
        let l01 = t.find(0, 1).unwrap();
        let l03 = t.find(0, 3).unwrap();
        let l12 = t.find(1, 2).unwrap();
        let l32 = t.find(3, 2).unwrap();
        assert_eq!(r.frac[l01][od], 0.5);
        assert_eq!(r.frac[l03][od], 0.5);
        assert_eq!(r.frac[l12][od], 0.5);
        assert_eq!(r.frac[l32][od], 0.5);
        // 4 -> 2 enters at 0 and splits there.
        let od = 4 * 5 + 2;
        assert_eq!(r.frac[t.find(4, 0).unwrap()][od], 1.0);
        assert_eq!(r.frac[l01][od], 0.5);
        // 0 -> 1 is direct.
        assert_eq!(r.frac[l01][1], 1.0);
        assert_eq!(r.frac[l03][1], 0.0);
        assert!(r.unroutable.is_empty());
    }

    #[test]
    fn rerouting_conserves_routable_demand_and_counts_the_rest() {
        let t = square();
        let mut demand = vec![0.0; 25];
        demand[2] = 10.0; // 0 -> 2
        demand[5 + 3] = 4.0; // 1 -> 3
        demand[4 * 5 + 1] = 6.0; // 4 -> 1
        demand[4] = 3.0; // 0 -> 4
        let fail = Failure {
            at: 1,
            links: vec![t.find(0, 1).unwrap(), t.find(1, 0).unwrap()],
        };
        let loads = link_loads(&t, &[demand.clone(), demand.clone()], 0, Some(&fail));
        let v = |a, b| loads.panel.values[t.find(a, b).unwrap()][1];
        // 0 -> 2 now all via 3; 4 -> 1 goes 4-0-3-2-1.
        assert_eq!(v(0, 3), 16.0);
        assert_eq!(v(3, 2), 16.0);
        assert_eq!(v(2, 1), 6.0);
        assert!(v(0, 1).is_nan());
        // Every unit of demand leaves its origin: the load out of each origin equals its demand.
        let out_of = |n: usize| -> f64 {
            t.links
                .iter()
                .enumerate()
                .filter(|(_, l)| l.from == n)
                .map(|(i, _)| loads.panel.values[i][1])
                .filter(|x| !x.is_nan())
                .sum::<f64>()
        };
        assert_eq!(out_of(4), 6.0);
        assert_eq!(loads.unroutable_demand, 0.0);

        // Cutting 4's only link makes its demand unroutable, and counted.
        let cut = Failure {
            at: 0,
            links: vec![t.find(4, 0).unwrap(), t.find(0, 4).unwrap()],
        };
        let loads = link_loads(&t, &[demand.clone()], 0, Some(&cut));
        assert_eq!(loads.unroutable_demand, 9.0);
        assert_eq!(loads.unroutable_pairs.len(), 8);
        // What stays routable is conserved: every routable pair's demand arrives whole.
        let mut up = vec![true; t.links.len()];
        for &l in &cut.links {
            up[l] = false;
        }
        let r = route(&t, &up);
        for od in 0..25 {
            let (src, dst) = (od / 5, od % 5);
            if src == dst || r.unroutable.contains(&od) {
                continue;
            }
            let arrived: f64 = (0..t.links.len())
                .filter(|&i| t.links[i].to == dst)
                .map(|i| r.frac[i][od])
                .sum();
            assert!((arrived - 1.0).abs() < 1e-12, "{src}->{dst}: {arrived}");
        }
    }

    #[test]
    fn bundled_abilene_routes_every_pair() {
        let a = Abilene::load(&Abilene::bundled_dir().unwrap()).unwrap();
        assert_eq!(a.topology.links.len(), 30);
        assert_eq!(a.weeks[0].1.len(), 2016);
        let r = route(&a.topology, &[true; 30]);
        assert!(r.unroutable.is_empty());
        // Every pair's demand leaves its origin whole.
        for src in 0..12 {
            for dst in 0..12 {
                if src == dst {
                    continue;
                }
                let od = src * 12 + dst;
                let out: f64 = a
                    .topology
                    .links
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.from == src)
                    .map(|(i, _)| r.frac[i][od])
                    .sum();
                assert!((out - 1.0).abs() < 1e-12, "{src}->{dst}: {out}");
            }
        }
    }
}
