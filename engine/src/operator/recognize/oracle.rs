//! The reference matcher the tests compare the operator against: a straightforward backtracking
//! implementation of SQL's row pattern matching over one partition's rows in order, written
//! separately from the operator's VM ([`super::program`]). It is used by the operator's
//! randomized test and by the end-to-end test through the server.

use super::Skip;
use super::program::Pattern;

/// Whether variable `var` accepts row `i` after the match's rows so far (`path`).
pub type Accepts<'a> = dyn Fn(u16, usize, &[(usize, u16)]) -> bool + 'a;

/// A path: `(row, variable)` per row read.
pub type Path = Vec<(usize, u16)>;
/// What follows a pattern part: called with the next row; true stops the search.
type Cont<'a> = dyn FnMut(usize, &mut Path, &mut Option<Path>) -> bool + 'a;

/// The window of rows an attempt may read, and whether a variable reached just past it records
/// the path (a thread still waiting when the window ends).
#[derive(Clone, Copy)]
struct Walk<'r> {
    accepts: &'r Accepts<'r>,
    end: usize,
    probe: bool,
}

impl Walk<'_> {
    /// Paths from row `i` matching `p`, each passed to `k`, in preference order (backtracking).
    fn go(
        self,
        p: &Pattern,
        i: usize,
        path: &mut Path,
        stop: &mut Option<Path>,
        k: &mut Cont<'_>,
    ) -> bool {
        match p {
            Pattern::Var(v) => {
                if self.probe && i == self.end {
                    *stop = Some(path.clone());
                    return true;
                }
                if i < self.end && (self.accepts)(*v, i, path) {
                    path.push((i, *v));
                    if k(i + 1, path, stop) {
                        return true;
                    }
                    path.pop();
                }
                false
            }
            // `^`: before the partition's first row only.
            Pattern::Start => i == 0 && k(i, path, stop),
            Pattern::Concat(parts) => self.seq(parts, i, path, stop, k),
            Pattern::Alt(parts) => parts.iter().any(|q| self.go(q, i, path, stop, k)),
            Pattern::Permute(parts) => permutations(parts.len()).iter().any(|o| {
                let parts: Vec<Pattern> = o.iter().map(|&j| parts[j].clone()).collect();
                self.seq(&parts, i, path, stop, k)
            }),
            Pattern::Repeat {
                body,
                min,
                max,
                greedy,
            } => self.rep(body, (*min, *max, *greedy), 0, i, path, stop, k),
        }
    }

    fn seq(
        self,
        parts: &[Pattern],
        i: usize,
        path: &mut Path,
        stop: &mut Option<Path>,
        k: &mut Cont<'_>,
    ) -> bool {
        match parts.split_first() {
            None => k(i, path, stop),
            Some((first, rest)) => self.go(first, i, path, stop, &mut |j, path, stop| {
                self.seq(rest, j, path, stop, k)
            }),
        }
    }

    /// `body` repeated (`min`, `max`, greedy), `count` times so far; an empty repetition ends
    /// the loop.
    #[allow(clippy::too_many_arguments)]
    fn rep(
        self,
        body: &Pattern,
        bounds: (u32, Option<u32>, bool),
        count: u32,
        i: usize,
        path: &mut Path,
        stop: &mut Option<Path>,
        k: &mut Cont<'_>,
    ) -> bool {
        let (min, max, greedy) = bounds;
        let more = |path: &mut Path, stop: &mut Option<Path>, k: &mut Cont<'_>| {
            self.go(body, i, path, stop, &mut |j, path, stop| {
                j > i && self.rep(body, bounds, count + 1, j, path, stop, k)
            })
        };
        if count < min {
            return more(path, stop, k);
        }
        let can_more = max.is_none_or(|m| count < m);
        if greedy {
            if can_more && more(path, stop, k) {
                return true;
            }
            k(i, path, stop)
        } else {
            if k(i, path, stop) {
                return true;
            }
            can_more && more(path, stop, k)
        }
    }
}

/// Every order of `0..n`, lexicographically.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    for first in 0..n {
        for rest in permutations(n - 1) {
            let mut o = vec![first];
            o.extend(rest.into_iter().map(|x| if x >= first { x + 1 } else { x }));
            out.push(o);
        }
    }
    out
}

/// What `MATCH_RECOGNIZE` emits over one partition's rows in order (`ts` their event times):
/// each match's path, and whether it is a timeout row (only with `timeout_rows`, which needs
/// `within`).
pub fn matches(
    pattern: &Pattern,
    ts: &[i64],
    accepts: &Accepts<'_>,
    skip: Skip,
    within: Option<i64>,
    timeout_rows: bool,
) -> Vec<(Path, bool)> {
    let mut out = Vec::new();
    let mut start_from = 0;
    for s in 0..ts.len() {
        if s < start_from {
            continue;
        }
        let end = match within {
            Some(w) => (s..ts.len()).take_while(|&j| ts[j] - ts[s] < w).count() + s,
            None => ts.len(),
        };
        let mut found: Option<Path> = None;
        let walk = Walk {
            accepts,
            end,
            probe: false,
        };
        walk.go(pattern, s, &mut Vec::new(), &mut None, &mut |_, path, _| {
            found = Some(path.clone());
            true
        });
        let timed_out = if found.is_none() && timeout_rows {
            // The preferred partial match that read every row of the window and wanted another.
            let mut partial: Option<Path> = None;
            let probe = Walk {
                probe: true,
                ..walk
            };
            probe.go(pattern, s, &mut Vec::new(), &mut partial, &mut |_, _, _| {
                false
            });
            partial.filter(|p| !p.is_empty())
        } else {
            None
        };
        let (path, flag) = match (found, timed_out) {
            (Some(p), _) => (p, false),
            (None, Some(p)) => (p, true),
            _ => continue,
        };
        if flag {
            start_from = s + 1;
            out.push((path, true));
            continue;
        }
        let first = path[0].0;
        let last = path[path.len() - 1].0;
        let to = |r: Option<usize>| match r {
            Some(r) if r > s => r,
            _ => s + 1,
        };
        start_from = match skip {
            Skip::PastLastRow => last + 1,
            Skip::ToNextRow => first + 1,
            Skip::ToFirst(v) => to(path.iter().find(|p| p.1 == v).map(|p| p.0)),
            Skip::ToLast(v) => to(path.iter().rev().find(|p| p.1 == v).map(|p| p.0)),
        };
        out.push((path, false));
    }
    out
}
