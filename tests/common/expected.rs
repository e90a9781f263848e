//! Figures computed straight from the REES46 file, independently of the
//! platform, for the tests to compare against.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

#[derive(Debug, serde::Deserialize)]
struct Row {
    event_type: String,
    product_id: String,
    price: f64,
    user_id: String,
    user_session: String,
}

#[derive(Debug, Default, Clone)]
pub struct Shopper {
    pub user_id: String,
    pub events: i64,
    pub views: i64,
    pub carts: i64,
    pub purchases: i64,
    pub last_viewed: Option<String>,
    /// Value added to the cart since the last purchase, in file order.
    pub cart_value: f64,
    /// Sum of floor(price) over purchases.
    pub purchase_points: i64,
    /// Product Added events with a price of at least 100.
    pub big_cart_adds: i64,
}

#[derive(Debug, Default)]
pub struct Expected {
    pub shoppers: HashMap<String, Shopper>,
    /// Viewed products per session.
    pub sessions: HashMap<String, BTreeSet<String>>,
    /// User of each row, in file order.
    pub row_users: Vec<String>,
}

impl Expected {
    pub fn from_file(path: &Path) -> Self {
        let mut expected = Expected::default();
        let mut reader = csv::Reader::from_path(path).expect("REES46 file opens");
        for row in reader.deserialize::<Row>() {
            let row = row.expect("REES46 row parses");
            expected.row_users.push(row.user_id.clone());
            let shopper = expected.shoppers.entry(row.user_id.clone()).or_insert_with(|| Shopper {
                user_id: row.user_id.clone(),
                ..Shopper::default()
            });
            shopper.events += 1;
            match row.event_type.as_str() {
                "view" => {
                    shopper.views += 1;
                    shopper.last_viewed = Some(row.product_id.clone());
                    expected
                        .sessions
                        .entry(row.user_session.clone())
                        .or_default()
                        .insert(row.product_id.clone());
                }
                "cart" => {
                    shopper.carts += 1;
                    shopper.cart_value += row.price;
                    if row.price >= 100.0 {
                        shopper.big_cart_adds += 1;
                    }
                }
                "purchase" => {
                    shopper.purchases += 1;
                    shopper.cart_value = 0.0;
                    shopper.purchase_points += row.price.floor() as i64;
                }
                other => panic!("unexpected event type {other}"),
            }
        }
        expected
    }

    /// Returns a user whose first event comes after `fraction` of the rows: once
    /// their profile exists, at least that much of the file was applied.
    pub fn user_first_seen_after(&self, fraction: f64) -> &str {
        let middle = (self.row_users.len() as f64 * fraction) as usize;
        let first_rows: HashMap<&str, usize> = self
            .row_users
            .iter()
            .enumerate()
            .rev()
            .map(|(index, user)| (user.as_str(), index))
            .collect();
        self.row_users[middle..]
            .iter()
            .find(|user| first_rows[user.as_str()] >= middle)
            .expect("some user first appears after that row")
    }

    /// Returns the `n` shoppers with the most events, ties broken by user id.
    pub fn top_shoppers(&self, n: usize) -> Vec<Shopper> {
        let mut shoppers: Vec<_> = self.shoppers.values().cloned().collect();
        shoppers.sort_by(|a, b| b.events.cmp(&a.events).then(a.user_id.cmp(&b.user_id)));
        shoppers.truncate(n);
        shoppers
    }

    /// Number of sessions in which each other product was viewed together with `product`.
    pub fn co_visits(&self, product: &str) -> BTreeMap<String, i64> {
        let mut counts = BTreeMap::new();
        for products in self.sessions.values().filter(|products| products.contains(product)) {
            for other in products.iter().filter(|other| *other != product) {
                *counts.entry(other.clone()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Returns the product whose most co-visited product is unique and has
    /// the highest count, with that product and its count.
    pub fn product_with_clear_neighbour(&self) -> (String, String, i64) {
        let products: BTreeSet<&String> = self.sessions.values().flatten().collect();
        let mut best: Option<(String, String, i64)> = None;
        for product in products {
            let mut ranked: Vec<(String, i64)> = self.co_visits(product).into_iter().collect();
            ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let clear = match ranked.as_slice() {
                [first] => Some(first.clone()),
                [first, second, ..] if first.1 > second.1 => Some(first.clone()),
                _ => None,
            };
            if let Some((neighbour, count)) = clear
                && best.as_ref().is_none_or(|(_, _, best_count)| count > *best_count)
            {
                best = Some((product.clone(), neighbour, count));
            }
        }
        best.expect("the file has at least one product with a clear co-visited neighbour")
    }
}
