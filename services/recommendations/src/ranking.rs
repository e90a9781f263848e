//! Merges the candidates of the two models into one ranked list.

use std::collections::HashSet;

use rtim_proto::recommendations::v1::Strategy;

use crate::store::Candidate;

/// One recommended item and the model that proposed it.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranked<'a> {
    pub candidate: &'a Candidate,
    pub strategy: Strategy,
}

/// Returns co-visited items in their given order, then popular items to fill
/// up to `limit`. Items in `excluded` and repeats are skipped.
pub fn merge<'a>(
    co_visited: &'a [Candidate],
    popular: &'a [Candidate],
    excluded: &HashSet<String>,
    limit: usize,
) -> Vec<Ranked<'a>> {
    let candidates = co_visited
        .iter()
        .map(|candidate| (candidate, Strategy::CoVisitation))
        .chain(popular.iter().map(|candidate| (candidate, Strategy::Popularity)));
    let mut seen: HashSet<&str> = HashSet::new();
    let mut ranked = Vec::with_capacity(limit);
    for (candidate, strategy) in candidates {
        if ranked.len() == limit {
            break;
        }
        if excluded.contains(&candidate.item_id) || !seen.insert(candidate.item_id.as_str()) {
            continue;
        }
        ranked.push(Ranked { candidate, strategy });
    }
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, i64)]) -> Vec<Candidate> {
        list.iter()
            .map(|(id, score)| Candidate {
                item_id: id.to_string(),
                score: *score,
                item: None,
            })
            .collect()
    }

    fn ids<'a>(ranked: &'a [Ranked<'_>]) -> Vec<&'a str> {
        ranked.iter().map(|entry| entry.candidate.item_id.as_str()).collect()
    }

    #[test]
    fn popular_fills_after_co_visits() {
        let co_visited = pairs(&[("b", 4), ("c", 2)]);
        let popular = pairs(&[("z", 50), ("c", 30), ("y", 10)]);
        let ranked = merge(&co_visited, &popular, &HashSet::new(), 4);
        assert_eq!(ids(&ranked), ["b", "c", "z", "y"], "co-visits first, no repeat of c");
        assert_eq!(ranked[0].strategy, Strategy::CoVisitation, "b comes from co-visitation");
        assert_eq!(ranked[2].strategy, Strategy::Popularity, "z fills from popularity");
        assert_eq!(
            ranked[2].candidate.score, 50,
            "a popular item keeps its popularity score"
        );
    }

    #[test]
    fn excluded_items_are_skipped() {
        let excluded = HashSet::from(["a".to_owned(), "z".to_owned()]);
        let co_visited = pairs(&[("z", 3), ("b", 1)]);
        let popular = pairs(&[("a", 9), ("y", 1)]);
        let ranked = merge(&co_visited, &popular, &excluded, 10);
        assert_eq!(ids(&ranked), ["b", "y"], "a and z are excluded");
    }

    #[test]
    fn limit_caps_the_list() {
        let co_visited = pairs(&[("b", 4), ("c", 2)]);
        let popular = pairs(&[("z", 50)]);
        let ranked = merge(&co_visited, &popular, &HashSet::new(), 1);
        assert_eq!(ids(&ranked), ["b"], "only the first item fits");
    }
}
