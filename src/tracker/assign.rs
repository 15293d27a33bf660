//! Gated optimal assignment of detections to tracks. Pairs outside the gate
//! are never matched; the rest are matched to minimise the total cost, with
//! "no match" costing the gate itself (so a far pair loses to leaving both
//! unmatched). The gate splits the problem into independent clusters, each
//! solved with the Hungarian method (pathfinding's Kuhn–Munkres), so the
//! cost grows with the cluster sizes, not with the number of tracks.

use pathfinding::kuhn_munkres::kuhn_munkres_min;
use pathfinding::matrix::Matrix;

/// A cluster's tracks, detections and gated pairs.
type Cluster = (Vec<usize>, Vec<usize>, Vec<(usize, usize, f64)>);

/// Costs are compared as integers in these units.
const SCALE: f64 = 1e6;

fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

/// `pairs`: (track, detection, cost) for every pair inside the gate, cost
/// in [0, gate]. Returns the matched (track, detection) pairs, sorted.
pub fn assign(
    tracks: usize,
    detections: usize,
    pairs: &[(usize, usize, f64)],
    gate: f64,
) -> Vec<(usize, usize)> {
    // Clusters: tracks and detections joined by a gated pair.
    let n = tracks + detections;
    let mut parent: Vec<usize> = (0..n).collect();
    for &(t, d, _) in pairs {
        let (a, b) = (find(&mut parent, t), find(&mut parent, tracks + d));
        if a != b {
            parent[a] = b;
        }
    }
    let mut clusters: std::collections::BTreeMap<usize, Cluster> = Default::default();
    for &(t, d, c) in pairs {
        let root = find(&mut parent, t);
        clusters.entry(root).or_default().2.push((t, d, c));
    }
    for cl in clusters.values_mut() {
        let mut ts: Vec<usize> = cl.2.iter().map(|p| p.0).collect();
        let mut ds: Vec<usize> = cl.2.iter().map(|p| p.1).collect();
        ts.sort_unstable();
        ts.dedup();
        ds.sort_unstable();
        ds.dedup();
        cl.0 = ts;
        cl.1 = ds;
    }
    let units = |c: f64| (c.clamp(0.0, gate) * SCALE).round() as i64;
    let forbidden = units(gate) * 4 + 1;
    let mut out = Vec::new();
    for (ts, ds, ps) in clusters.values() {
        if ts.len() == 1 && ds.len() == 1 {
            out.push((ts[0], ds[0]));
            continue;
        }
        // Rows: the cluster's tracks. Columns: its detections, then one
        // "unmatched" column per track (only its own is allowed).
        let (nt, nd) = (ts.len(), ds.len());
        let mut w = Matrix::new(nt, nd + nt, forbidden);
        for &(t, d, c) in ps {
            let (i, j) = (
                ts.binary_search(&t).unwrap_or(0),
                ds.binary_search(&d).unwrap_or(0),
            );
            w[(i, j)] = units(c);
        }
        for i in 0..nt {
            w[(i, nd + i)] = units(gate);
        }
        let (_, cols) = kuhn_munkres_min(&w);
        for (i, &j) in cols.iter().enumerate() {
            if j < nd && w[(i, j)] < forbidden {
                out.push((ts[i], ds[j]));
            }
        }
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_optimum_beats_greedy_and_nothing_outside_the_gate_is_matched() {
        // Greedy would take (0, 0) at 1.0 and leave track 1 with nothing.
        let pairs = [(0, 0, 1.0), (0, 1, 2.0), (1, 0, 2.0)];
        assert_eq!(assign(2, 2, &pairs, 9.0), vec![(0, 1), (1, 0)]);
        // Track 2 has no pair inside the gate; detection 2 neither.
        assert_eq!(assign(3, 3, &pairs, 9.0), vec![(0, 1), (1, 0)]);
        assert!(assign(2, 2, &[], 9.0).is_empty());
    }

    #[test]
    fn leaving_a_pair_unmatched_can_be_cheaper_than_a_poor_match() {
        // Matching (0, 0) and (1, 1) costs 8.5 + 8.5; (0, 1) alone costs 0.5 + a gate of 9 for track 1.
        let pairs = [(0, 0, 8.5), (0, 1, 0.5), (1, 1, 8.5)];
        assert_eq!(assign(2, 2, &pairs, 9.0), vec![(0, 1)]);
    }

    #[test]
    fn independent_clusters_are_solved_apart() {
        let mut pairs = Vec::new();
        for k in 0..1000 {
            pairs.push((k, k, 0.1));
        }
        let got = assign(1000, 1000, &pairs, 9.0);
        assert_eq!(got.len(), 1000);
        assert!(got.iter().all(|(t, d)| t == d));
    }
}
