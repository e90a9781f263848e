//! Merges the candidates of the two models into one ranked list.

use std::collections::HashSet;

use rtim_proto::recommendations::v1::Strategy;

/// One recommended item before catalog data is attached.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranked {
    pub item_id: String,
    pub score: f64,
    pub strategy: Strategy,
}

/// Returns co-visited items in their given order, then popular items to fill
/// up to `limit`. Items in `excluded` and repeats are skipped.
pub fn merge(
    co_visited: &[(String, i64)],
    popular: &[(String, i64)],
    excluded: &HashSet<String>,
    limit: usize,
) -> Vec<Ranked> {
    let candidates = co_visited
        .iter()
        .map(|candidate| (candidate, Strategy::CoVisitation))
        .chain(popular.iter().map(|candidate| (candidate, Strategy::Popularity)));
    let mut seen: HashSet<&str> = HashSet::new();
    let mut ranked = Vec::with_capacity(limit);
    for ((item_id, score), strategy) in candidates {
        if ranked.len() == limit {
            break;
        }
        if excluded.contains(item_id) || !seen.insert(item_id.as_str()) {
            continue;
        }
        ranked.push(Ranked {
            item_id: item_id.clone(),
            score: *score as f64,
            strategy,
        });
    }
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, i64)]) -> Vec<(String, i64)> {
        list.iter().map(|(id, score)| (id.to_string(), *score)).collect()
    }

    fn ids(ranked: &[Ranked]) -> Vec<&str> {
        ranked.iter().map(|entry| entry.item_id.as_str()).collect()
    }

    #[test]
    fn popular_fills_after_co_visits() {
        let ranked = merge(
            &pairs(&[("b", 4), ("c", 2)]),
            &pairs(&[("z", 50), ("c", 30), ("y", 10)]),
            &HashSet::new(),
            4,
        );
        assert_eq!(ids(&ranked), ["b", "c", "z", "y"], "co-visits first, no repeat of c");
        assert_eq!(ranked[0].strategy, Strategy::CoVisitation, "b comes from co-visitation");
        assert_eq!(ranked[2].strategy, Strategy::Popularity, "z fills from popularity");
        assert_eq!(ranked[2].score, 50.0, "a popular item keeps its popularity score");
    }

    #[test]
    fn excluded_items_are_skipped() {
        let excluded = HashSet::from(["a".to_owned(), "z".to_owned()]);
        let ranked = merge(
            &pairs(&[("z", 3), ("b", 1)]),
            &pairs(&[("a", 9), ("y", 1)]),
            &excluded,
            10,
        );
        assert_eq!(ids(&ranked), ["b", "y"], "a and z are excluded");
    }

    #[test]
    fn limit_caps_the_list() {
        let ranked = merge(&pairs(&[("b", 4), ("c", 2)]), &pairs(&[("z", 50)]), &HashSet::new(), 1);
        assert_eq!(ids(&ranked), ["b"], "only the first item fits");
    }
}
