//! How many processes of each type run, and where: Heroku's defaults under `scale`,
//! `magrathea.yml` and app.json, placed by each place's free room.

use std::collections::BTreeMap;

/// How many processes of a type an environment runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// One on every node (the default for `web`).
    PerNode,
    /// This many across the environment's nodes.
    Total(u32),
}

/// For each node, for each process type, the process numbers it runs. Numbers are global
/// (`web.1` on n1, `web.2` on n2, `web.3` on n1).
pub type Placement = Vec<BTreeMap<String, Vec<u32>>>;

/// How many of each Procfile type run, as Heroku and Dokku decide it: `web` one (on every
/// node, so one on a single node) and every other type none, unless asked. Asked means, per
/// type, first an explicit `scale` (`scaled`, remembered in the store), then `magrathea.yml`
/// (`yml`), then app.json's `formation`. Counts for types the Procfile lacks are ignored.
pub fn formation<'a>(
    types: impl Iterator<Item = &'a String>,
    scaled: &BTreeMap<String, u32>,
    yml: &BTreeMap<String, u32>,
    app_json: &BTreeMap<String, u32>,
) -> BTreeMap<String, Count> {
    types
        .map(|t| {
            let c = match scaled.get(t).or(yml.get(t)).or(app_json.get(t)) {
                Some(n) => Count::Total(*n),
                None if t == "web" => Count::PerNode,
                None => Count::Total(0),
            };
            (t.clone(), c)
        })
        .collect()
}

/// Place processes by free capacity: each next process goes to the node with the most room
/// left (ties: the node with fewer of that type, then the first). `free` is how many more
/// of this app's processes each node takes (see [`free_capacity`]). Fails with a clear
/// message when the nodes are full.
pub fn place(counts: &BTreeMap<String, Count>, free: &[i64]) -> Result<Placement, String> {
    let mut out: Placement = vec![BTreeMap::new(); free.len()];
    let mut left: Vec<i64> = free.to_vec();
    let mut order: Vec<(&String, &Count)> = counts.iter().collect();
    // Per-node types first: they are not negotiable.
    order.sort_by_key(|(t, c)| (!matches!(c, Count::PerNode), t.as_str() != "web"));
    for (ptype, count) in order {
        match *count {
            Count::PerNode => {
                for (i, node) in out.iter_mut().enumerate() {
                    if left[i] < 1 {
                        return Err(format!(
                            "not enough capacity for a {ptype} process on every node: node {} has no room left",
                            i + 1
                        ));
                    }
                    node.entry(ptype.clone()).or_default().push(i as u32 + 1);
                    left[i] -= 1;
                }
            }
            Count::Total(n) => {
                for k in 1..=n {
                    let best = (0..free.len()).max_by_key(|&i| {
                        let mine = out[i].get(ptype).map_or(0, Vec::len) as i64;
                        (left[i], -mine, -(i as i64))
                    });
                    match best {
                        Some(i) if left[i] > 0 => {
                            out[i].entry(ptype.clone()).or_default().push(k);
                            left[i] -= 1;
                        }
                        _ => {
                            let total: i64 = free.iter().map(|f| (*f).max(0)).sum();
                            return Err(format!(
                                "not enough capacity for {n} {ptype} process{}: the nodes have room for {total} more in all",
                                if n == 1 { "" } else { "es" },
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(c: &[(&str, Count)]) -> BTreeMap<String, Count> {
        c.iter().map(|(t, c)| (t.to_string(), *c)).collect()
    }

    #[test]
    fn placement_by_free_capacity() {
        // Defaults: web on every node, numbered across nodes; a worker once.
        let p = place(
            &counts(&[("web", Count::PerNode), ("worker", Count::Total(1))]),
            &[8, 8],
        )
        .unwrap();
        assert_eq!(p[0]["web"], vec![1]);
        assert_eq!(p[1]["web"], vec![2]);
        assert_eq!(p[0]["worker"], vec![1], "ties go to the first node");
        // web=3 on two equal nodes: 2 + 1, numbers global.
        let p = place(&counts(&[("web", Count::Total(3))]), &[8, 8]).unwrap();
        assert_eq!(p[0]["web"], vec![1, 3]);
        assert_eq!(p[1]["web"], vec![2]);
        // The fuller node gets less.
        let p = place(&counts(&[("web", Count::Total(3))]), &[1, 8]).unwrap();
        assert!(!p[0].contains_key("web"));
        assert_eq!(p[1]["web"], vec![1, 2, 3]);
        let p = place(&counts(&[("web", Count::Total(4))]), &[3, 4]).unwrap();
        assert_eq!(p[0]["web"], vec![2, 4]);
        assert_eq!(p[1]["web"], vec![1, 3]);
        // Zero means none; too many is refused with the numbers.
        let p = place(&counts(&[("web", Count::Total(0))]), &[8]).unwrap();
        assert!(p[0].get("web").is_none_or(Vec::is_empty));
        let e = place(&counts(&[("web", Count::Total(5))]), &[2, 2]).unwrap_err();
        assert!(e.contains("room for 4 more"), "{e}");
        let e = place(&counts(&[("web", Count::PerNode)]), &[2, 0]).unwrap_err();
        assert!(e.contains("node 2 has no room"), "{e}");
    }

    #[test]
    fn formation_defaults_and_precedence() {
        let types: Vec<String> = ["web", "worker", "once"].map(String::from).to_vec();
        let m = |v: &[(&str, u32)]| -> BTreeMap<String, u32> {
            v.iter().map(|(t, n)| (t.to_string(), *n)).collect()
        };
        let none = BTreeMap::new();
        // Heroku's default: web, nothing else.
        let f = formation(types.iter(), &none, &none, &none);
        assert_eq!(f["web"], Count::PerNode);
        assert_eq!(f["worker"], Count::Total(0));
        assert_eq!(f["once"], Count::Total(0));
        // app.json < magrathea.yml < scale, per type; unknown types ignored.
        let json = m(&[("worker", 2), ("web", 0), ("clock", 1)]);
        let yml = m(&[("worker", 3)]);
        let scaled = m(&[("worker", 4)]);
        let f = formation(types.iter(), &none, &none, &json);
        assert_eq!((f["web"], f["worker"]), (Count::Total(0), Count::Total(2)));
        assert!(!f.contains_key("clock"));
        let f = formation(types.iter(), &none, &yml, &json);
        assert_eq!(f["worker"], Count::Total(3));
        let f = formation(types.iter(), &scaled, &yml, &json);
        assert_eq!(f["worker"], Count::Total(4));
        assert_eq!(f["web"], Count::Total(0), "app.json still decides web");
    }
}
