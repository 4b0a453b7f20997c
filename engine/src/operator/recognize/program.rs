//! Row patterns compiled to a small program of instructions, run as a backtracking-free VM over
//! threads ordered by preference (a Pike VM whose threads keep their paths, since conditions may
//! read them).
//!
//! A pattern's *preferred* match is the one a backtracking matcher trying the alternatives in
//! order finds first: a greedy quantifier tries one more repetition before stopping, a reluctant
//! one stops first, an alternation tries its branches left to right, `PERMUTE` tries the
//! permutations in the lexicographic order of the listed variables. [`Program::closure`] lists,
//! from a thread's position, the instructions reachable without reading a row, in exactly that
//! order, so threads kept in list order are kept in preference order.

use crate::{EngineError, Result};

/// A row pattern over pattern variables (numbered in the order of the variable list).
#[derive(Debug, Clone, PartialEq)]
pub enum Pattern {
    /// One row that the variable's condition accepts.
    Var(u16),
    /// Each part after the other.
    Concat(Vec<Pattern>),
    /// One of the branches, the first preferred.
    Alt(Vec<Pattern>),
    /// `body{min,max}` (`max` `None`: unbounded); greedy prefers more repetitions.
    Repeat {
        body: Box<Pattern>,
        min: u32,
        max: Option<u32>,
        greedy: bool,
    },
    /// Every part once, in any order (SQL's `PERMUTE`).
    Permute(Vec<Pattern>),
    /// `^`: no row, only before the partition's first row.
    Start,
}

impl Pattern {
    /// Whether the pattern matches an empty sequence of rows.
    pub fn nullable(&self) -> bool {
        match self {
            Pattern::Var(_) => false,
            Pattern::Start => true,
            Pattern::Concat(parts) | Pattern::Permute(parts) => parts.iter().all(Pattern::nullable),
            Pattern::Alt(parts) => parts.iter().any(Pattern::nullable),
            Pattern::Repeat { body, min, .. } => *min == 0 || body.nullable(),
        }
    }

    /// The pattern as SQL writes it, with `vars` naming the variables.
    pub fn sql(&self, vars: &[String]) -> String {
        let quantifier = |min: u32, max: Option<u32>| match (min, max) {
            (0, None) => "*".to_string(),
            (1, None) => "+".to_string(),
            (0, Some(1)) => "?".to_string(),
            (n, None) => format!("{{{n},}}"),
            (n, Some(m)) if n == m => format!("{{{n}}}"),
            (n, Some(m)) => format!("{{{n},{m}}}"),
        };
        match self {
            Pattern::Var(v) => vars.get(*v as usize).cloned().unwrap_or_default(),
            Pattern::Start => "^".to_string(),
            Pattern::Concat(parts) => parts
                .iter()
                .map(|p| p.sql(vars))
                .collect::<Vec<_>>()
                .join(" "),
            Pattern::Alt(parts) => format!(
                "({})",
                parts
                    .iter()
                    .map(|p| p.sql(vars))
                    .collect::<Vec<_>>()
                    .join(" | ")
            ),
            Pattern::Repeat {
                body,
                min,
                max,
                greedy,
            } => {
                let inner = match body.as_ref() {
                    Pattern::Var(_) | Pattern::Alt(_) | Pattern::Start => body.sql(vars),
                    other => format!("({})", other.sql(vars)),
                };
                let reluctant = if *greedy { "" } else { "?" };
                format!("{inner}{}{reluctant}", quantifier(*min, *max))
            }
            Pattern::Permute(parts) => format!(
                "PERMUTE({})",
                parts
                    .iter()
                    .map(|p| p.sql(vars))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// One instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inst {
    /// Read one row that variable `.0` accepts, then go on with the next instruction.
    Var(u16),
    /// Go on at both; the first is preferred.
    Split(u32, u32),
    Jmp(u32),
    /// Go on only before the partition's first row (`^`).
    Start,
    /// The pattern has matched.
    Match,
}

/// What a thread can do next without reading a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Read a row as variable `var`, then continue at `next`.
    Read { var: u16, next: u32 },
    /// The thread's path is a match.
    Match,
}

/// The compiled pattern.
#[derive(Debug, Clone)]
pub struct Program {
    insts: Vec<Inst>,
    /// [`Program::closure`] of each instruction, computed once, then (at [`Program::entry`]
    /// `(true)`) that of the first instruction before the partition's first row.
    steps: Vec<Vec<Step>>,
    /// The pattern has a `^`.
    anchored: bool,
}

/// Most instructions a pattern may compile to (bounded quantifiers are unrolled).
const MAX_INSTRUCTIONS: usize = 20_000;

/// Most parts of a `PERMUTE` (its permutations are spelled out).
pub const MAX_PERMUTE: usize = 6;

impl Program {
    pub fn compile(pattern: &Pattern) -> Result<Self> {
        let mut p = Program {
            insts: Vec::new(),
            steps: Vec::new(),
            anchored: false,
        };
        p.emit(pattern)?;
        p.insts.push(Inst::Match);
        p.anchored = p.insts.contains(&Inst::Start);
        let mut seen = Vec::new();
        p.steps = (0..p.insts.len() as u32)
            .map(|pc| (pc, false))
            .chain(std::iter::once((0, true)))
            .map(|(pc, first)| {
                let mut out = Vec::new();
                p.closure(pc, first, &mut seen, &mut out);
                out
            })
            .collect();
        Ok(p)
    }

    /// What a thread at `pc` can do next without reading a row, in preference order.
    pub fn steps(&self, pc: u32) -> &[Step] {
        self.steps.get(pc as usize).map_or(&[], Vec::as_slice)
    }

    /// Where an attempt starts: the first instruction, or, for an attempt at the partition's
    /// first row, a position of its own whose steps let `^` pass.
    pub fn entry(&self, first_row: bool) -> u32 {
        if first_row && self.anchored {
            self.insts.len() as u32
        } else {
            0
        }
    }

    /// The pattern has a `^`, so an attempt at the partition's first row differs from others.
    pub fn anchored(&self) -> bool {
        self.anchored
    }

    fn push(&mut self, inst: Inst) -> Result<u32> {
        if self.insts.len() >= MAX_INSTRUCTIONS {
            return Err(EngineError::Internal(format!(
                "the pattern is too large (over {MAX_INSTRUCTIONS} steps once its bounded \
                 quantifiers are spelled out)"
            )));
        }
        self.insts.push(inst);
        Ok((self.insts.len() - 1) as u32)
    }

    fn here(&self) -> u32 {
        self.insts.len() as u32
    }

    fn patch(&mut self, at: u32, inst: Inst) {
        self.insts[at as usize] = inst;
    }

    fn emit(&mut self, pattern: &Pattern) -> Result<()> {
        match pattern {
            Pattern::Var(v) => {
                self.push(Inst::Var(*v))?;
            }
            Pattern::Start => {
                self.push(Inst::Start)?;
            }
            Pattern::Concat(parts) => {
                for part in parts {
                    self.emit(part)?;
                }
            }
            Pattern::Alt(parts) => self.alternation(parts)?,
            Pattern::Permute(parts) => {
                let mut orders = Vec::new();
                permutations(&mut (0..parts.len()).collect::<Vec<_>>(), 0, &mut orders);
                let branches: Vec<Pattern> = orders
                    .into_iter()
                    .map(|order| Pattern::Concat(order.iter().map(|&i| parts[i].clone()).collect()))
                    .collect();
                self.alternation(&branches)?;
            }
            Pattern::Repeat {
                body,
                min,
                max,
                greedy,
            } => {
                for _ in 0..*min {
                    self.emit(body)?;
                }
                match max {
                    None => {
                        // L: split(body, end); body; jmp L; end:
                        let split = self.push(Inst::Jmp(0))?;
                        self.emit(body)?;
                        self.push(Inst::Jmp(split))?;
                        let end = self.here();
                        let (a, b) = if *greedy {
                            (split + 1, end)
                        } else {
                            (end, split + 1)
                        };
                        self.patch(split, Inst::Split(a, b));
                    }
                    Some(max) => {
                        // Each optional repetition may stop the rest: split(body, end) body ...
                        let mut splits = Vec::new();
                        for _ in *min..*max {
                            splits.push(self.push(Inst::Jmp(0))?);
                            self.emit(body)?;
                        }
                        let end = self.here();
                        for split in splits {
                            let (a, b) = if *greedy {
                                (split + 1, end)
                            } else {
                                (end, split + 1)
                            };
                            self.patch(split, Inst::Split(a, b));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn alternation(&mut self, parts: &[Pattern]) -> Result<()> {
        let mut jumps = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            if i + 1 < parts.len() {
                let split = self.push(Inst::Jmp(0))?;
                self.emit(part)?;
                jumps.push(self.push(Inst::Jmp(0))?);
                let next = self.here();
                self.patch(split, Inst::Split(split + 1, next));
            } else {
                self.emit(part)?;
            }
        }
        let end = self.here();
        for jump in jumps {
            self.patch(jump, Inst::Jmp(end));
        }
        Ok(())
    }

    /// Appends to `out`, in preference order, what a thread at `pc` can do next without reading a
    /// row; `first`: no row of the partition came before (so `^` passes). `seen` is scratch
    /// space (any contents; left cleared for the next call).
    pub fn closure(&self, pc: u32, first: bool, seen: &mut Vec<bool>, out: &mut Vec<Step>) {
        seen.clear();
        seen.resize(self.insts.len(), false);
        let mut stack = vec![pc];
        while let Some(pc) = stack.pop() {
            let Some(done) = seen.get_mut(pc as usize) else {
                continue;
            };
            if *done {
                continue;
            }
            *done = true;
            match self.insts[pc as usize] {
                Inst::Var(var) => out.push(Step::Read { var, next: pc + 1 }),
                Inst::Match => out.push(Step::Match),
                Inst::Jmp(to) => stack.push(to),
                Inst::Start if first => stack.push(pc + 1),
                Inst::Start => {}
                Inst::Split(a, b) => {
                    // `a` is preferred: explored first, so pushed last.
                    stack.push(b);
                    stack.push(a);
                }
            }
        }
    }
}

fn permutations(items: &mut [usize], k: usize, out: &mut Vec<Vec<usize>>) {
    if k == items.len() {
        out.push(items.to_vec());
        return;
    }
    // Lexicographic order: choose each remaining item, smallest first.
    let mut rest: Vec<usize> = items[k..].to_vec();
    rest.sort_unstable();
    for first in rest {
        let mut next = items[..k].to_vec();
        next.push(first);
        next.extend(items[k..].iter().copied().filter(|&x| x != first));
        permutations(&mut next, k + 1, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The preferred match of `pattern` over `rows` (each row: the variables it satisfies),
    /// starting at row 0, by running the program: the length of the match.
    fn run(pattern: &Pattern, rows: &[&[u16]]) -> Option<usize> {
        let program = Program::compile(pattern).expect("compile");
        let mut threads: Vec<u32> = vec![0];
        let mut best = None;
        let (mut seen, mut steps) = (Vec::new(), Vec::new());
        for i in 0..=rows.len() {
            let mut next = Vec::new();
            'threads: for &pc in &threads {
                steps.clear();
                program.closure(pc, i == 0, &mut seen, &mut steps);
                for s in &steps {
                    match *s {
                        Step::Match => {
                            best = Some(i);
                            break 'threads;
                        }
                        Step::Read { var, next: to } => {
                            if rows.get(i).is_some_and(|r| r.contains(&var)) && !next.contains(&to)
                            {
                                next.push(to);
                            }
                        }
                    }
                }
            }
            threads = next;
            if threads.is_empty() {
                break;
            }
        }
        best
    }

    fn var(v: u16) -> Pattern {
        Pattern::Var(v)
    }

    fn rep(p: Pattern, min: u32, max: Option<u32>, greedy: bool) -> Pattern {
        Pattern::Repeat {
            body: Box::new(p),
            min,
            max,
            greedy,
        }
    }

    #[test]
    fn greedy_and_reluctant_quantifiers() {
        let ab: &[u16] = &[0, 1];
        let rows = [ab, ab, ab];
        // A+ takes every row it can; A+? stops at one.
        assert_eq!(run(&rep(var(0), 1, None, true), &rows), Some(3));
        assert_eq!(run(&rep(var(0), 1, None, false), &rows), Some(1));
        // A{2} exactly two, A{1,2} greedy two, reluctant one.
        assert_eq!(run(&rep(var(0), 2, Some(2), true), &rows), Some(2));
        assert_eq!(run(&rep(var(0), 1, Some(2), false), &rows), Some(1));
        // A+? B: the reluctant A stops as soon as B can follow.
        let p = Pattern::Concat(vec![rep(var(0), 1, None, false), var(1)]);
        assert_eq!(run(&p, &rows), Some(2));
        let p = Pattern::Concat(vec![rep(var(0), 1, None, true), var(1)]);
        assert_eq!(run(&p, &rows), Some(3));
    }

    #[test]
    fn alternation_prefers_the_left_branch_and_permute_every_order() {
        let a: &[u16] = &[0];
        let b: &[u16] = &[1];
        let p = Pattern::Alt(vec![
            Pattern::Concat(vec![var(0), var(1)]),
            Pattern::Concat(vec![var(0)]),
        ]);
        assert_eq!(run(&p, &[a, b]), Some(2));
        assert_eq!(run(&p, &[a, a]), Some(1));
        let p = Pattern::Permute(vec![var(0), var(1)]);
        assert_eq!(run(&p, &[b, a]), Some(2));
        assert_eq!(run(&p, &[b, b]), None);
        assert!(!p.nullable());
        assert!(rep(var(0), 0, None, true).nullable());
    }

    #[test]
    fn start_anchors_only_before_the_first_row() {
        let a: &[u16] = &[0];
        let anchored = Pattern::Concat(vec![Pattern::Start, rep(var(0), 1, None, true)]);
        assert_eq!(run(&anchored, &[a, a]), Some(2));
        assert!(Program::compile(&anchored).expect("compile").anchored());
        // After a row, `^` never passes: only the other branch matches.
        let late = Pattern::Alt(vec![
            Pattern::Concat(vec![var(0), Pattern::Start, var(0)]),
            var(0),
        ]);
        assert_eq!(run(&late, &[a, a]), Some(1));
        // An attempt at a later row enters without the anchor's position.
        let program = Program::compile(&anchored).expect("compile");
        assert_eq!(program.entry(false), 0);
        assert!(program.steps(program.entry(false)).is_empty());
        assert_eq!(
            program.steps(program.entry(true)),
            &[Step::Read { var: 0, next: 2 }]
        );
        assert!(!Program::compile(&var(0)).expect("compile").anchored());
        assert_eq!(anchored.sql(&["A".to_string()]), "^ A+");
    }

    #[test]
    fn patterns_print_as_sql() {
        let vars = ["A".to_string(), "B".to_string()];
        let p = Pattern::Concat(vec![
            var(0),
            rep(var(1), 1, None, false),
            rep(Pattern::Concat(vec![var(0), var(1)]), 2, Some(3), true),
        ]);
        assert_eq!(p.sql(&vars), "A B+? (A B){2,3}");
    }
}
