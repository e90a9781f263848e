//! Figures computed straight from the DIGINETICA files, independently of the
//! platform, for the tests to compare against. The rules follow the replay's
//! documented mapping. Each order number is one Order Completed at its
//! earliest timeframe, and `NA` users are `diginetica-session-<sessionId>`.
//! An event's time is its session's start plus its timeframe in
//! milliseconds, where the start is the latest instant that puts every row
//! of the session on its `eventdate`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, SecondsFormat};
use serde_json::Value;

use super::{Gateway, count, wait_until};

pub const VIEWS_FILE: &str = "sample_train-item-views.csv";
pub const PURCHASES_FILE: &str = "train-purchases.csv";
pub const CATEGORIES_FILE: &str = "product-categories.csv";

#[derive(Debug, Default, Clone)]
pub struct Shopper {
    /// User id, or the anonymous id of the session.
    pub id: String,
    pub views: i64,
    pub orders: i64,
    /// Milliseconds since the Unix epoch.
    pub first_seen: i64,
    pub last_seen: i64,
    /// Categories of the viewed products, with their counts.
    pub categories: BTreeMap<String, i64>,
}

impl Shopper {
    pub fn events(&self) -> i64 {
        self.views + self.orders
    }

    pub fn first_seen_text(&self) -> String {
        rfc3339(self.first_seen)
    }

    pub fn last_seen_text(&self) -> String {
        rfc3339(self.last_seen)
    }

    fn saw(&mut self, at: i64) {
        if self.views + self.orders == 0 {
            self.first_seen = at;
            self.last_seen = at;
        }
        self.first_seen = self.first_seen.min(at);
        self.last_seen = self.last_seen.max(at);
    }
}

fn rfc3339(millis: i64) -> String {
    DateTime::from_timestamp_millis(millis)
        .expect("times of the files are in range")
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[derive(Debug, Default)]
pub struct Expected {
    pub views: usize,
    pub orders: usize,
    /// Shoppers by user id or anonymous id.
    pub shoppers: HashMap<String, Shopper>,
}

/// The columns of one row, by header name.
struct Rows {
    header: Vec<String>,
    records: Vec<csv::StringRecord>,
}

impl Rows {
    fn read(path: &Path) -> Self {
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(b';')
            .from_path(path)
            .unwrap_or_else(|error| panic!("{} opens: {error}", path.display()));
        let header = reader.headers().unwrap().iter().map(str::to_owned).collect();
        let records = reader.records().map(|record| record.expect("row parses")).collect();
        Self { header, records }
    }

    fn column(&self, name: &str) -> usize {
        self.header.iter().position(|column| column == name).unwrap()
    }
}

fn midnight_millis(date: &str) -> i64 {
    let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").expect("eventdate is a date");
    date.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_millis()
}

struct Order {
    session: String,
    user: String,
    timeframe: i64,
}

impl Expected {
    pub fn from_folder(folder: &Path) -> Self {
        let categories = Rows::read(&folder.join(CATEGORIES_FILE));
        let (item, category) = (categories.column("itemId"), categories.column("categoryId"));
        let category_of: HashMap<&str, &str> = categories
            .records
            .iter()
            .map(|row| (&row[item], &row[category]))
            .collect();

        let views = Rows::read(&folder.join(VIEWS_FILE));
        let v = ["session_id", "user_id", "item_id", "timeframe", "eventdate"].map(|name| views.column(name));
        let purchases = Rows::read(&folder.join(PURCHASES_FILE));
        let p = ["sessionId", "userId", "timeframe", "eventdate", "ordernumber"].map(|name| purchases.column(name));

        let mut starts: HashMap<String, i64> = HashMap::new();
        let rows = views
            .records
            .iter()
            .map(|row| (&row[v[0]], &row[v[3]], &row[v[4]]))
            .chain(purchases.records.iter().map(|row| (&row[p[0]], &row[p[2]], &row[p[3]])));
        for (session, timeframe, date) in rows {
            let bound = midnight_millis(date) - timeframe.parse::<i64>().unwrap();
            let start = starts.entry(session.to_owned()).or_insert(bound);
            *start = (*start).max(bound);
        }

        let mut orders: HashMap<&str, Order> = HashMap::new();
        for row in &purchases.records {
            let timeframe: i64 = row[p[2]].parse().unwrap();
            let order = orders.entry(&row[p[4]]).or_insert_with(|| Order {
                session: row[p[0]].to_owned(),
                user: row[p[1]].to_owned(),
                timeframe,
            });
            if timeframe < order.timeframe || (timeframe == order.timeframe && order.user == "NA") {
                order.user = row[p[1]].to_owned();
            }
            order.timeframe = order.timeframe.min(timeframe);
        }

        let mut expected = Expected {
            views: views.records.len(),
            orders: orders.len(),
            ..Expected::default()
        };
        for row in &views.records {
            let at = starts[&row[v[0]]] + row[v[3]].parse::<i64>().unwrap();
            let shopper = expected.shopper(&row[v[0]], &row[v[1]]);
            shopper.saw(at);
            shopper.views += 1;
            if let Some(category) = category_of.get(&row[v[2]]) {
                *shopper.categories.entry((*category).to_owned()).or_insert(0) += 1;
            }
        }
        for order in orders.values() {
            let at = starts[&order.session] + order.timeframe;
            let shopper = expected.shopper(&order.session, &order.user);
            shopper.saw(at);
            shopper.orders += 1;
        }
        expected
    }

    fn shopper(&mut self, session: &str, user: &str) -> &mut Shopper {
        let id = if user == "NA" {
            format!("diginetica-session-{session}")
        } else {
            user.to_owned()
        };
        self.shoppers.entry(id.clone()).or_insert_with(|| Shopper {
            id,
            ..Shopper::default()
        })
    }

    pub fn events(&self) -> usize {
        self.views + self.orders
    }

    /// Returns the `n` shoppers with the most events among those with a user
    /// id (`anonymous` false) or without one, ties broken by id.
    pub fn top_shoppers(&self, n: usize, anonymous: bool) -> Vec<Shopper> {
        let mut shoppers: Vec<Shopper> = self
            .shoppers
            .values()
            .filter(|shopper| shopper.id.starts_with("diginetica-session-") == anonymous)
            .cloned()
            .collect();
        shoppers.sort_by(|a, b| b.events().cmp(&a.events()).then(a.id.cmp(&b.id)));
        shoppers.truncate(n);
        shoppers
    }
}

/// Waits for the profiles of the ten users and the three anonymous sessions
/// with the most events to hold all their events, checks them, and returns
/// those shoppers.
pub async fn check_top_shoppers(gateway: &Gateway, expected: &Expected, timeout: Duration) -> Vec<Shopper> {
    let mut shoppers = expected.top_shoppers(10, false);
    shoppers.extend(expected.top_shoppers(3, true));
    for shopper in &shoppers {
        let profile = wait_until(
            &format!("profile of {} with {} events", shopper.id, shopper.events()),
            timeout,
            || gateway.profile_with_total(&shopper.id, shopper.events()),
        )
        .await;
        check_profile(&profile, shopper);
    }
    shoppers
}

/// Checks a profile against the shopper's figures: event counts, order
/// count, first and last seen, and the category shares of the views.
pub fn check_profile(profile: &Value, shopper: &Shopper) {
    let id = &shopper.id;
    let total: i64 = profile["event_counts"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(Value::as_i64)
        .sum();
    assert_eq!(total, shopper.events(), "events of {id}: {profile}");
    assert_eq!(count(profile, "Product Viewed"), shopper.views, "views of {id}");
    assert_eq!(count(profile, "Order Completed"), shopper.orders, "orders of {id}");
    assert_eq!(
        profile["order_count"].as_i64(),
        Some(shopper.orders),
        "order count of {id}"
    );
    assert_eq!(
        profile["first_seen"].as_str(),
        Some(shopper.first_seen_text().as_str()),
        "first seen of {id}"
    );
    assert_eq!(
        profile["last_seen"].as_str(),
        Some(shopper.last_seen_text().as_str()),
        "last seen of {id}"
    );

    let affinity = profile["category_affinity"].as_object().unwrap();
    let viewed: i64 = shopper.categories.values().sum();
    let categories: Vec<&String> = affinity.keys().collect();
    assert_eq!(
        categories,
        shopper.categories.keys().collect::<Vec<_>>(),
        "categories of {id}"
    );
    for (category, views) in &shopper.categories {
        let share = affinity[category].as_f64().unwrap();
        let expected = *views as f64 / viewed as f64;
        assert!(
            (share - expected).abs() < 1e-9,
            "share of {category} for {id}: {share}, expected {expected}"
        );
    }
}
