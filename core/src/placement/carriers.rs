//! Sharing a request among the carriers it names.
//!
//! Each requested carrier gets a share of the count in proportion to its room: the room of the
//! IDCs that offer it, a multi-line IDC's room split evenly among the requested carriers it has,
//! so that no room counts twice. IDCs offering the same requested carriers (the same *kind*) are
//! interchangeable for this, so the shares are decided on a small matrix first, kinds by carriers
//! (at most fifteen by four), by one controlled rounding that keeps every entry, every kind's total
//! and every carrier's total within rounding of its exact value at once; then each kind's share of
//! each carrier is dealt out to its IDCs.
//!
//! With `spread` every IDC's count is also its exact share of the whole count rounded down or up,
//! as without carriers: the kinds' totals fix how many IDCs of each kind round up. With `pack` the
//! IDCs are chosen by room alone (the fewest), and the carriers are shared in proportion to what
//! each packed IDC takes. With [`CarrierPerIdc::One`] every IDC then serves through one carrier: the
//! few IDCs the exact mix splits are given to one of their carriers each, as evenly as possible.

use std::cmp::Reverse;
use std::collections::{BTreeMap, VecDeque};

use super::{
    CarrierPerIdc, CarrierSet, Placement, Slot, Strategy, carrier_index, pack, round_up_largest, shares,
};
use crate::fleet::Carrier;

/// How many carriers there are: the columns of every matrix here.
const CARRIERS: usize = Carrier::ALL.len();

/// The least common multiple of every possible kind's size (1 to 4 carriers): in twelfths, a kind's
/// share split evenly among its carriers stays a whole number of parts.
const TWELFTHS: u128 = 12;

/// A non-negative rational `whole + part / d`, for a denominator `d` shared by a whole matrix.
#[derive(Debug, Clone, Copy, Default)]
struct Exact {
    whole: u128,
    part: u128,
}

/// Places `target` instances over `slots` (sorted by IDC, none without a carrier, `room` their total
/// room) by `strategy`, with every requested carrier taking its share: the plan's placements.
pub(super) fn place(
    slots: &[Slot],
    target: u64,
    room: u128,
    strategy: Strategy,
    per_idc: CarrierPerIdc,
) -> Vec<Placement> {
    if target == 0 {
        return Vec::new();
    }
    let mut by_kind: BTreeMap<CarrierSet, Vec<usize>> = BTreeMap::new();
    for (i, s) in slots.iter().enumerate() {
        by_kind.entry(s.carriers).or_default().push(i);
    }
    let kinds: Vec<(CarrierSet, Vec<usize>)> = by_kind.into_iter().collect();

    // Each kind's exact share of the count, over `denominator`: its room's share when spreading,
    // what the packed IDCs of the kind take when packing.
    let (mut counts, exact_shares, totals, denominator) = match strategy {
        Strategy::Spread => {
            let exact = shares(slots, target, room);
            let totals: Vec<Exact> =
                kinds.iter().map(|(_, members)| kind_total(members, &exact, room)).collect();
            (exact.iter().map(|s| s.0).collect::<Vec<u64>>(), Some(exact), totals, room)
        }
        Strategy::Pack => {
            let counts = pack(slots, target);
            let totals: Vec<Exact> = kinds
                .iter()
                .map(|(_, members)| Exact {
                    whole: members.iter().map(|&i| u128::from(counts[i])).sum(),
                    part: 0,
                })
                .collect();
            (counts, None, totals, 1)
        }
    };
    let rows: Vec<[Exact; CARRIERS]> = kinds
        .iter()
        .zip(&totals)
        .map(|((carriers, _), total)| even_split(*carriers, *total, denominator))
        .collect();
    let quotas = round_shares(&rows, denominator * TWELFTHS);

    let mut split = vec![[0u64; CARRIERS]; slots.len()];
    for ((carriers, members), quota) in kinds.iter().zip(&quotas) {
        if let Some(exact) = &exact_shares {
            // The kind's rounded total says how many of its IDCs round their share up.
            let given: u64 = members.iter().map(|&i| counts[i]).sum();
            let total: u64 = quota.iter().sum();
            round_up_largest(members.iter().copied(), exact, slots, total - given, &mut counts);
        }
        match per_idc {
            CarrierPerIdc::Any => deal(*carriers, quota, members, &counts, &mut split),
            CarrierPerIdc::One => fill(*carriers, quota, members, &counts, &mut split),
        }
    }
    if per_idc == CarrierPerIdc::One {
        one_carrier_each(&mut split, &counts);
    }

    let mut placements = Vec::with_capacity(slots.len());
    for (slot, row) in slots.iter().zip(&split) {
        for (carrier, &count) in Carrier::ALL.iter().zip(row) {
            if count > 0 {
                placements.push(Placement { idc: slot.idc.clone(), carrier: *carrier, count });
            }
        }
    }
    placements
}

/// The exact share of the IDCs `members`, each of whose exact shares is `exact` (whole instances
/// and a remainder over `room`).
fn kind_total(members: &[usize], exact: &[(u64, u128)], room: u128) -> Exact {
    let whole: u128 = members.iter().map(|&i| u128::from(exact[i].0)).sum();
    let part: u128 = members.iter().map(|&i| exact[i].1).sum();
    Exact { whole: whole + part / room, part: part % room }
}

/// `total` (over `denominator`) split evenly among `carriers`, as a matrix row over
/// `denominator * TWELFTHS`; zero for the other carriers.
fn even_split(carriers: CarrierSet, total: Exact, denominator: u128) -> [Exact; CARRIERS] {
    let m = carriers.len() as u128;
    let each = Exact {
        whole: total.whole / m,
        part: ((total.whole % m) * denominator + total.part) * (TWELFTHS / m),
    };
    let mut row = [Exact::default(); CARRIERS];
    for c in carriers.iter() {
        row[carrier_index(c)] = each;
    }
    row
}

/// Rounds a small matrix of exact shares over `denominator`, whose total is whole, so that every
/// entry, every row's sum and every column's sum is its exact value rounded down or up, and the
/// total is kept.
///
/// The classic construction (Bacharach 1966; Cox 1987, "A constructive procedure for unbiased
/// controlled rounding"): a column and a row are added that make every row's and column's fractional
/// parts sum to whole numbers; then, around any cycle of entries that are not whole yet, the parts are
/// moved alternately up and down by the same amount until one becomes whole. No row or column sum
/// changes and a part only moves between 0 and 1 (its floor and ceiling); each row or column with a
/// part that is not whole has at least two (its parts sum to a whole), so a cycle is left until no
/// part is.
fn round_shares(rows: &[[Exact; CARRIERS]], denominator: u128) -> Vec<[u64; CARRIERS]> {
    let extra_row = rows.len();
    let column = |c: usize| rows.len() + 1 + c;
    let mut cells = Vec::with_capacity((rows.len() + 1) * (CARRIERS + 1));
    let mut column_parts = [0u128; CARRIERS];
    let make_whole = |parts: u128| (denominator - parts % denominator) % denominator;
    for (r, row) in rows.iter().enumerate() {
        for (c, e) in row.iter().enumerate() {
            cells.push(Cell { row: r, column: column(c), value: e.part, cap: denominator });
            column_parts[c] += e.part;
        }
        let parts: u128 = row.iter().map(|e| e.part).sum();
        cells.push(Cell { row: r, column: column(CARRIERS), value: make_whole(parts), cap: denominator });
    }
    for (c, &parts) in column_parts.iter().enumerate() {
        cells.push(Cell { row: extra_row, column: column(c), value: make_whole(parts), cap: denominator });
    }
    cancel_cycles(&mut cells, rows.len() + 1 + CARRIERS + 1);
    rows.iter()
        .enumerate()
        .map(|(r, row)| {
            let mut rounded = [0u64; CARRIERS];
            for (c, e) in row.iter().enumerate() {
                let up = cells[r * (CARRIERS + 1) + c].value == denominator;
                // At most the whole count: every entry is a share of it.
                rounded[c] = (e.whole + u128::from(up)) as u64;
            }
            rounded
        })
        .collect()
}

/// Splits each IDC of one kind (`members`, with `counts`) evenly among the kind's `carriers`, so that
/// the kind gives each carrier exactly its `quota`.
///
/// Every IDC gives each carrier its count divided by the kind's size, and deals what is left over
/// (less than one per carrier) round the carriers in turn, carrying on where the previous IDC
/// stopped. The quotas are the kind's total split evenly, rounded down or up, so they differ by at
/// most one and none is below what the even parts give; starting the deal with the carriers rounded
/// up gives each carrier exactly its quota.
fn deal(
    carriers: CarrierSet,
    quota: &[u64; CARRIERS],
    members: &[usize],
    counts: &[u64],
    split: &mut [[u64; CARRIERS]],
) {
    let mut order: Vec<usize> = carriers.iter().map(carrier_index).collect();
    order.sort_by_key(|&c| Reverse(quota[c]));
    let m = order.len();
    let mut next = 0;
    for &i in members {
        let (each, left) = (counts[i] / m as u64, (counts[i] % m as u64) as usize);
        for (k, &c) in order.iter().enumerate() {
            split[i][c] = each + u64::from((k + m - next) % m < left);
        }
        next = (next + left) % m;
    }
}

/// Gives the IDCs of one kind (`members`, with `counts`) to the kind's `carriers` in turn, whole,
/// until each carrier has its `quota`: only an IDC where one carrier's quota runs out is split.
fn fill(
    carriers: CarrierSet,
    quota: &[u64; CARRIERS],
    members: &[usize],
    counts: &[u64],
    split: &mut [[u64; CARRIERS]],
) {
    let mut columns = carriers.iter().map(carrier_index);
    let mut column = columns.next();
    let mut left = column.map_or(0, |c| quota[c]);
    for &i in members {
        let mut need = counts[i];
        // The quotas add up to the kind's counts, so the carriers never run out before the IDCs.
        while let (true, Some(c)) = (need > 0, column) {
            let take = need.min(left);
            split[i][c] += take;
            need -= take;
            left -= take;
            if left == 0 {
                column = columns.next();
                left = column.map_or(0, |c| quota[c]);
            }
        }
    }
}

/// Turns an exact split into one carrier per IDC, as close to the same carrier totals as it can.
///
/// The IDCs still split (a few per kind after [`fill`]) first trade instances around cycles, each
/// IDC moving as many from one of its carriers to another as the next takes back, which changes no
/// carrier's total, until no cycle is left: the split IDCs and their carriers then form a forest, so
/// at most one fewer IDCs than carriers stay split. Each of those is given whole to the carrier that
/// leaves the largest difference from the exact totals smallest. Each move shifts a carrier's total
/// by less than that IDC's count, so with `k` carriers no total moves by more than `k - 1` times
/// (the largest count an IDC takes, less one); with two carriers, one IDC moves by at most half.
fn one_carrier_each(split: &mut [[u64; CARRIERS]], counts: &[u64]) {
    let is_split = |row: &[u64; CARRIERS]| row.iter().filter(|&&n| n > 0).count() > 1;
    let rows: Vec<usize> = (0..split.len()).filter(|&i| is_split(&split[i])).collect();
    if rows.is_empty() {
        return;
    }
    let mut cells = Vec::new();
    for (r, &i) in rows.iter().enumerate() {
        for (c, &n) in split[i].iter().enumerate().filter(|(_, n)| **n > 0) {
            cells.push(Cell {
                row: r,
                column: rows.len() + c,
                value: u128::from(n),
                cap: u128::from(counts[i]),
            });
        }
    }
    cancel_cycles(&mut cells, rows.len() + CARRIERS);
    for cell in &cells {
        // Never above the IDC's count, which is a u64.
        split[rows[cell.row]][cell.column - rows.len()] = cell.value as u64;
    }

    let mut goal = [0u64; CARRIERS];
    for row in split.iter() {
        for (total, n) in goal.iter_mut().zip(row) {
            *total += n;
        }
    }
    let mut totals = goal;
    for &i in &rows {
        if !is_split(&split[i]) {
            continue;
        }
        let row = split[i];
        let given_to = move |to: usize| {
            let mut t = totals;
            for (total, n) in t.iter_mut().zip(&row) {
                *total -= n;
            }
            t[to] += counts[i];
            t
        };
        let worst = |t: [u64; CARRIERS]| t.iter().zip(&goal).map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(0);
        let Some(best) =
            (0..CARRIERS).filter(|&c| row[c] > 0).min_by_key(|&c| (worst(given_to(c)), Reverse(row[c]), c))
        else {
            continue;
        };
        totals = given_to(best);
        split[i] = [0; CARRIERS];
        split[i][best] = counts[i];
    }
}

/// An entry of a small bipartite matrix being rounded, between the nodes `row` and `column`:
/// `value` lies in `0..=cap`, and the entry is open while strictly inside.
#[derive(Debug, Clone)]
struct Cell {
    row: usize,
    column: usize,
    value: u128,
    cap: u128,
}

impl Cell {
    fn open(&self) -> bool {
        0 < self.value && self.value < self.cap
    }
}

/// Shifts values around cycles of open cells, alternately up and down so that no row or column sum
/// changes, until the open cells form a forest. Each shift closes at least one cell and a closed cell
/// is never touched again, so there are at most as many shifts as cells.
fn cancel_cycles(cells: &mut [Cell], nodes: usize) {
    while let Some(cycle) = open_cycle(cells, nodes) {
        let up = cycle.iter().step_by(2).map(|&k| cells[k].cap - cells[k].value);
        let down = cycle.iter().skip(1).step_by(2).map(|&k| cells[k].value);
        let Some(shift) = up.chain(down).min() else { return };
        for (j, &k) in cycle.iter().enumerate() {
            if j % 2 == 0 {
                cells[k].value += shift;
            } else {
                cells[k].value -= shift;
            }
        }
    }
}

/// A cycle of open cells in walking order (each shares a node with the next, the last with the
/// first), if there is one. The open cells join a forest one by one; the first whose two nodes the
/// forest already connects closes a cycle with the path between them.
fn open_cycle(cells: &[Cell], nodes: usize) -> Option<Vec<usize>> {
    let mut forest: Vec<Vec<(usize, usize)>> = vec![Vec::new(); nodes];
    for (k, cell) in cells.iter().enumerate().filter(|(_, c)| c.open()) {
        if let Some(mut path) = forest_path(&forest, cell.row, cell.column) {
            path.push(k);
            return Some(path);
        }
        forest[cell.row].push((cell.column, k));
        forest[cell.column].push((cell.row, k));
    }
    None
}

/// The cells on the path from `from` to `to` in `forest` (each node's neighbours, with the cell
/// between them), in walking order, if the two are connected.
fn forest_path(forest: &[Vec<(usize, usize)>], from: usize, to: usize) -> Option<Vec<usize>> {
    let mut came_by: Vec<Option<(usize, usize)>> = vec![None; forest.len()];
    let mut seen = vec![false; forest.len()];
    seen[from] = true;
    let mut queue = VecDeque::from([from]);
    while let Some(node) = queue.pop_front() {
        if node == to {
            let mut path = Vec::new();
            let mut at = to;
            while let Some((previous, cell)) = came_by[at] {
                path.push(cell);
                at = previous;
            }
            path.reverse();
            return Some(path);
        }
        for &(next, cell) in &forest[node] {
            if !seen[next] {
                seen[next] = true;
                came_by[next] = Some((node, cell));
                queue.push_back(next);
            }
        }
    }
    None
}
