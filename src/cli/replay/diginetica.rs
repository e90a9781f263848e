//! The DIGINETICA CIKM Cup 2016 release (semicolon-separated CSV files with a
//! header row), mapped onto Segment's e-commerce events:
//!
//! - each item view is a Product Viewed with `product_id` and `category`;
//! - each order is one Order Completed with `order_id` and a `products` list,
//!   as Segment's e-commerce spec v2 has it, with a `quantity` per product;
//! - the user is `userId`, or, where that is `NA`, an anonymous id derived from
//!   the session (`diginetica-session-<sessionId>`).
//!
//! Times: the release states neither the unit of `timeframe` nor which date
//! `eventdate` is. The replay reads `timeframe` as milliseconds since the
//! session started and `eventdate` as the UTC date of the event itself.
//! Read that way, every session of the purchases and sample views files has
//! a start that puts each of its rows on its own date. Adding the whole
//! timeframe to the date would count the offset twice, because the dates of
//! a session already move on with its timeframe. Each session therefore
//! starts at the latest instant that puts every one of its rows on its own
//! date, and an event's time is that start plus its timeframe. Events of a
//! session keep their timeframe order. One event of each session falls at
//! midnight of its date, because the release has no time of day.
//!
//! The purchases file records some orders again at a later time with the
//! same items. Only the earliest recording of an order is replayed.
//!
//! Views and orders of both files are replayed merged in time order, so all
//! rows are read before the first event is sent.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use chrono::NaiveDate;
use prost_types::Timestamp;
use rtim_proto::events::v1::{Event, EventType};
use rtim_proto::json::json_to_struct;
use serde_json::{Map, Value, json};

use super::source::{self, BadRow, Location, ProgressUnit, Row, Source, preview};

/// Views file names of the release, the full file first: the sample holds
/// the first sessions of the full file.
const VIEWS_FILES: [&str; 2] = ["train-item-views.csv", "sample_train-item-views.csv"];
const PURCHASES_FILE: &str = "train-purchases.csv";
const CATEGORIES_FILE: &str = "product-categories.csv";

/// Columns of each file, spelled as their header normalised by [`normalise`].
/// The full views file has camelCase names, the SR-GNN sample snake_case.
const VIEWS_COLUMNS: [&str; 5] = ["sessionid", "userid", "itemid", "timeframe", "eventdate"];
const PURCHASES_COLUMNS: [&str; 6] = ["sessionid", "userid", "timeframe", "eventdate", "ordernumber", "itemid"];
const CATEGORIES_COLUMNS: [&str; 2] = ["itemid", "categoryid"];

/// The files of one replay.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Files {
    pub views: Option<PathBuf>,
    pub purchases: Option<PathBuf>,
    pub categories: Option<PathBuf>,
}

impl Files {
    /// Finds the files: `dataset` is the dataset folder or its views or
    /// purchases file, and `purchases` and `categories` name files elsewhere.
    /// Beside a views or purchases file, the categories file is found by its
    /// release name, because categories only add to the events.
    pub fn locate(dataset: &Path, purchases: Option<&Path>, categories: Option<&Path>) -> anyhow::Result<Self> {
        let mut files = if dataset.is_dir() {
            Self::in_folder(dataset)
        } else {
            let beside = dataset.parent().map(|folder| folder.join(CATEGORIES_FILE));
            Self {
                categories: beside.filter(|path| path.is_file()),
                ..Self::from_file(dataset)?
            }
        };
        if let Some(path) = purchases {
            files.purchases = Some(path.to_owned());
        }
        if let Some(path) = categories {
            files.categories = Some(path.to_owned());
        }
        if files.views.is_none() && files.purchases.is_none() {
            anyhow::bail!(
                "{} contains no {}, {} or {}",
                dataset.display(),
                VIEWS_FILES[0],
                VIEWS_FILES[1],
                PURCHASES_FILE
            );
        }
        Ok(files)
    }

    fn in_folder(folder: &Path) -> Self {
        let existing = |name: &str| Some(folder.join(name)).filter(|path| path.is_file());
        Self {
            views: VIEWS_FILES.into_iter().find_map(existing),
            purchases: existing(PURCHASES_FILE),
            categories: existing(CATEGORIES_FILE),
        }
    }

    /// Tells a views file from a purchases file by its header.
    fn from_file(path: &Path) -> anyhow::Result<Self> {
        let mut reader = csv_reader(path)?;
        let header = reader
            .headers()
            .with_context(|| format!("cannot read the header row of {}", path.display()))?;
        let columns: Vec<String> = header.iter().map(normalise).collect();
        let has_all = |needed: &[&str]| needed.iter().all(|name| columns.iter().any(|column| column == name));
        if has_all(&PURCHASES_COLUMNS) {
            Ok(Self {
                purchases: Some(path.to_owned()),
                ..Self::default()
            })
        } else if has_all(&VIEWS_COLUMNS) {
            Ok(Self {
                views: Some(path.to_owned()),
                ..Self::default()
            })
        } else {
            anyhow::bail!(
                "{} is neither a DIGINETICA views file (sessionId;userId;itemId;timeframe;eventdate) nor a \
                 purchases file (sessionId;userId;timeframe;eventdate;ordernumber;itemId); its header is {}",
                path.display(),
                header.iter().collect::<Vec<_>>().join(";")
            )
        }
    }
}

/// Lowercase without underscores, so that `session_id` and `sessionId` match.
fn normalise(column: &str) -> String {
    column.trim().replace('_', "").to_ascii_lowercase()
}

fn csv_reader(path: &Path) -> anyhow::Result<csv::Reader<File>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(csv::ReaderBuilder::new().delimiter(b';').from_reader(file))
}

/// One file being read: its rows with the columns it needs found by name.
struct Table {
    label: Arc<str>,
    reader: csv::Reader<File>,
    header: csv::StringRecord,
    /// Position in a row of each needed column, in the order they were asked for.
    positions: Vec<usize>,
}

impl Table {
    fn open(path: &Path, columns: &[&str]) -> anyhow::Result<Self> {
        let mut reader = csv_reader(path)?;
        let header = reader
            .headers()
            .with_context(|| format!("cannot read the header row of {}", path.display()))?
            .clone();
        let normalised: Vec<String> = header.iter().map(normalise).collect();
        let mut positions = Vec::with_capacity(columns.len());
        for column in columns {
            let position = normalised.iter().position(|name| name == column).with_context(|| {
                format!(
                    "{} has no column {column}; its header is {}",
                    path.display(),
                    header.iter().collect::<Vec<_>>().join(";")
                )
            })?;
            positions.push(position);
        }
        Ok(Self {
            label: source::label(path),
            reader,
            header,
            positions,
        })
    }

    /// Reads every row and passes each to `visit` with its line, or the
    /// reason it could not be read. Fails only when the file cannot be read.
    fn for_each(&mut self, mut visit: impl FnMut(u64, Result<Fields<'_>, BadRow>)) -> anyhow::Result<()> {
        let mut record = csv::StringRecord::new();
        loop {
            let next_line = self.reader.position().line();
            match self.reader.read_record(&mut record) {
                Ok(false) => return Ok(()),
                Ok(true) => {
                    let line = record.position().map_or(next_line, csv::Position::line);
                    let fields = Fields {
                        record: &record,
                        header: &self.header,
                        positions: &self.positions,
                    };
                    visit(line, Ok(fields));
                }
                Err(error) if matches!(error.kind(), csv::ErrorKind::Io(_)) => {
                    return Err(error).with_context(|| format!("cannot read {}", self.label));
                }
                Err(error) => {
                    let line = error.position().map_or(next_line, csv::Position::line);
                    visit(line, Err(BadRow::new("UNREADABLE_ROW", "row", error.to_string())));
                }
            }
        }
    }
}

/// The needed columns of one row, parsed with errors that name the column.
struct Fields<'a> {
    record: &'a csv::StringRecord,
    header: &'a csv::StringRecord,
    positions: &'a [usize],
}

impl Fields<'_> {
    /// Returns the text of the `index`-th needed column and its name in the header.
    fn get(&self, index: usize) -> (&str, &str) {
        let position = self.positions[index];
        let name = self.header.get(position).unwrap_or_default();
        (self.record.get(position).unwrap_or_default().trim(), name)
    }

    fn id(&self, index: usize) -> Result<u64, BadRow> {
        let (text, column) = self.get(index);
        text.parse().map_err(|_| {
            let detail = format!("{} is not an id: expected a whole number", preview(text));
            BadRow::new("INVALID_ID", column, detail)
        })
    }

    /// Reads a user id, or `None` for `NA` or an empty value.
    fn user(&self, index: usize) -> Result<Option<u64>, BadRow> {
        let (text, _) = self.get(index);
        if text.is_empty() || text == "NA" {
            return Ok(None);
        }
        self.id(index).map(Some)
    }

    fn timeframe(&self, index: usize) -> Result<i64, BadRow> {
        let (text, column) = self.get(index);
        text.parse::<i64>().ok().filter(|value| *value >= 0).ok_or_else(|| {
            let detail = format!(
                "{} is not a timeframe: expected a whole number of milliseconds",
                preview(text)
            );
            BadRow::new("INVALID_TIMEFRAME", column, detail)
        })
    }

    /// Midnight (UTC) of the date, in milliseconds since the Unix epoch.
    fn date(&self, index: usize) -> Result<i64, BadRow> {
        let (text, column) = self.get(index);
        let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
            let detail = format!("{} is not a date such as 2016-05-09", preview(text));
            BadRow::new("INVALID_EVENT_DATE", column, detail)
        })?;
        let midnight = date.and_hms_opt(0, 0, 0).expect("midnight exists on every date");
        Ok(midnight.and_utc().timestamp_millis())
    }
}

#[derive(Debug)]
struct View {
    line: u64,
    /// 1-based data row, which the message id derives from.
    row_number: u64,
    session: u64,
    user: Option<u64>,
    item: u64,
    timeframe: i64,
}

/// The earliest recording of one order.
#[derive(Clone, Debug)]
struct Order {
    /// Line of the recording's first row.
    line: u64,
    number: u64,
    session: u64,
    user: Option<u64>,
    timeframe: i64,
    /// Items with their quantity, in the order of their first row.
    items: Vec<(u64, u32)>,
}

impl Order {
    fn add(&mut self, item: u64, user: Option<u64>) {
        self.user = self.user.or(user);
        match self.items.iter_mut().find(|(known, _)| *known == item) {
            Some((_, quantity)) => *quantity += 1,
            None => self.items.push((item, 1)),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Slot {
    View(usize),
    Order(usize),
}

/// The whole dataset in time order, mapped to events one at a time.
pub struct Replay {
    views: Vec<View>,
    orders: Vec<Order>,
    categories: HashMap<u64, u64>,
    /// Start of each session, in milliseconds since the Unix epoch.
    starts: HashMap<u64, i64>,
    /// Rows that could not be read, replayed first.
    bad_rows: std::vec::IntoIter<Row>,
    schedule: std::vec::IntoIter<(i64, Slot)>,
    views_label: Arc<str>,
    views_name: String,
    purchases_label: Arc<str>,
    purchases_name: String,
    total: u64,
    done: u64,
    description: String,
}

impl Replay {
    pub fn load(files: &Files) -> anyhow::Result<Self> {
        let categories = match &files.categories {
            Some(path) => load_categories(path)?,
            None => HashMap::new(),
        };
        let mut starts = Starts::default();
        let mut bad_rows = Vec::new();
        let views = match &files.views {
            Some(path) => load_views(path, &mut starts, &mut bad_rows)?,
            None => Vec::new(),
        };
        let (orders, purchase_rows) = match &files.purchases {
            Some(path) => load_purchases(path, &mut starts, &mut bad_rows)?,
            None => (Vec::new(), 0),
        };
        let starts = starts.0;

        let start = |session: &u64| starts.get(session).copied().unwrap_or_default();
        let mut schedule: Vec<(i64, Slot)> = Vec::with_capacity(views.len() + orders.len());
        schedule.extend(
            views
                .iter()
                .enumerate()
                .map(|(index, view)| (start(&view.session) + view.timeframe, Slot::View(index))),
        );
        schedule.extend(
            orders
                .iter()
                .enumerate()
                .map(|(index, order)| (start(&order.session) + order.timeframe, Slot::Order(index))),
        );
        // A stable sort keeps views before orders at the same instant, each in file order.
        schedule.sort_by_key(|(time, _)| *time);

        let description = describe(files, &views, &orders, purchase_rows, categories.len());
        let total = (schedule.len() + bad_rows.len()) as u64;
        let path_or_empty = |path: &Option<PathBuf>| path.clone().unwrap_or_default();
        Ok(Self {
            views,
            orders,
            categories,
            starts,
            bad_rows: bad_rows.into_iter(),
            schedule: schedule.into_iter(),
            views_label: source::label(&path_or_empty(&files.views)),
            views_name: source::file_name(&path_or_empty(&files.views)),
            purchases_label: source::label(&path_or_empty(&files.purchases)),
            purchases_name: source::file_name(&path_or_empty(&files.purchases)),
            total,
            done: 0,
            description,
        })
    }

    /// Returns what was read, for printing before the replay starts.
    pub fn description(&self) -> &str {
        &self.description
    }

    fn time(&self, session: u64, timeframe: i64) -> Timestamp {
        let millis = self.starts.get(&session).copied().unwrap_or_default() + timeframe;
        Timestamp {
            seconds: millis.div_euclid(1000),
            nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
        }
    }

    fn product(&self, item: u64) -> Map<String, Value> {
        let mut product = Map::new();
        product.insert("product_id".to_owned(), json!(item.to_string()));
        if let Some(category) = self.categories.get(&item) {
            product.insert("category".to_owned(), json!(category.to_string()));
        }
        product
    }

    fn view_event(&self, view: &View) -> Event {
        let row_number = view.row_number.to_string();
        Event {
            message_id: source::message_id(&["diginetica", &self.views_name, &row_number]),
            event: "Product Viewed".to_owned(),
            properties: Some(json_to_struct(self.product(view.item))),
            timestamp: Some(self.time(view.session, view.timeframe)),
            ..shopper(view.session, view.user)
        }
    }

    fn order_event(&self, order: &Order) -> Event {
        let products: Vec<Value> = order
            .items
            .iter()
            .map(|(item, quantity)| {
                let mut product = self.product(*item);
                product.insert("quantity".to_owned(), json!(quantity));
                Value::Object(product)
            })
            .collect();
        let mut properties = Map::new();
        properties.insert("order_id".to_owned(), json!(order.number.to_string()));
        properties.insert("products".to_owned(), Value::Array(products));
        let number = order.number.to_string();
        Event {
            message_id: source::message_id(&["diginetica", &self.purchases_name, "order", &number]),
            event: "Order Completed".to_owned(),
            properties: Some(json_to_struct(properties)),
            timestamp: Some(self.time(order.session, order.timeframe)),
            ..shopper(order.session, order.user)
        }
    }
}

/// Builds a track event of the session's shopper, without name, properties or time.
fn shopper(session: u64, user: Option<u64>) -> Event {
    let (user_id, anonymous_id) = match user {
        Some(user) => (user.to_string(), String::new()),
        None => (String::new(), anonymous_id(session)),
    };
    Event {
        r#type: EventType::Track as i32,
        user_id,
        anonymous_id,
        session_id: session.to_string(),
        ..Event::default()
    }
}

/// Returns the anonymous id of a session's shopper when the release has no user id.
pub fn anonymous_id(session: u64) -> String {
    format!("diginetica-session-{session}")
}

impl Source for Replay {
    fn next_row(&mut self) -> Option<Row> {
        if let Some(row) = self.bad_rows.next() {
            self.done += 1;
            return Some(row);
        }
        let (_, slot) = self.schedule.next()?;
        self.done += 1;
        Some(match slot {
            Slot::View(index) => {
                let view = &self.views[index];
                Row {
                    location: Location::new(&self.views_label, view.line),
                    event: Ok(self.view_event(view)),
                }
            }
            Slot::Order(index) => {
                let order = &self.orders[index];
                Row {
                    location: Location::new(&self.purchases_label, order.line),
                    event: Ok(self.order_event(order)),
                }
            }
        })
    }

    fn progress(&self) -> (u64, u64) {
        (self.done, self.total)
    }

    fn unit(&self) -> ProgressUnit {
        ProgressUnit::Events
    }
}

/// Session starts, refined row by row: each row's date and timeframe bound
/// the start from below, and the start is the highest bound.
#[derive(Default)]
struct Starts(HashMap<u64, i64>);

impl Starts {
    fn observe(&mut self, session: u64, date: i64, timeframe: i64) {
        let bound = date - timeframe;
        self.0
            .entry(session)
            .and_modify(|start| *start = (*start).max(bound))
            .or_insert(bound);
    }
}

fn load_categories(path: &Path) -> anyhow::Result<HashMap<u64, u64>> {
    let mut table = Table::open(path, &CATEGORIES_COLUMNS)?;
    let label = Arc::clone(&table.label);
    let mut categories = HashMap::new();
    let mut first_error = None;
    table.for_each(|line, fields| {
        let entry = fields.and_then(|fields| Ok((fields.id(0)?, fields.id(1)?)));
        match entry {
            Ok((item, category)) => {
                categories.insert(item, category);
            }
            Err(bad) => {
                first_error.get_or_insert((line, bad));
            }
        }
    })?;
    // The categories file is a lookup table rather than events: a bad row
    // would silently strip the category from every event of its item.
    if let Some((line, bad)) = first_error {
        anyhow::bail!("{}: {bad}", Location::new(&label, line));
    }
    Ok(categories)
}

fn load_views(path: &Path, starts: &mut Starts, bad_rows: &mut Vec<Row>) -> anyhow::Result<Vec<View>> {
    let mut table = Table::open(path, &VIEWS_COLUMNS)?;
    let label = Arc::clone(&table.label);
    let mut views = Vec::new();
    let mut row_number = 0;
    table.for_each(|line, fields| {
        row_number += 1;
        let view = fields.and_then(|fields| {
            let view = View {
                line,
                row_number,
                session: fields.id(0)?,
                user: fields.user(1)?,
                item: fields.id(2)?,
                timeframe: fields.timeframe(3)?,
            };
            Ok((view, fields.date(4)?))
        });
        match view {
            Ok((view, date)) => {
                starts.observe(view.session, date, view.timeframe);
                views.push(view);
            }
            Err(bad) => bad_rows.push(Row {
                location: Location::new(&label, line),
                event: Err(bad),
            }),
        }
    })?;
    Ok(views)
}

/// Reads the purchases and groups them into orders. Also returns the number
/// of purchase rows read without error.
fn load_purchases(path: &Path, starts: &mut Starts, bad_rows: &mut Vec<Row>) -> anyhow::Result<(Vec<Order>, usize)> {
    let mut table = Table::open(path, &PURCHASES_COLUMNS)?;
    let label = Arc::clone(&table.label);
    let mut orders: Vec<Order> = Vec::new();
    let mut index_of: HashMap<u64, usize> = HashMap::new();
    let mut rows = 0;
    table.for_each(|line, fields| {
        let purchase = fields.and_then(|fields| {
            let order = Order {
                line,
                session: fields.id(0)?,
                user: fields.user(1)?,
                timeframe: fields.timeframe(2)?,
                number: fields.id(4)?,
                items: Vec::new(),
            };
            Ok((order, fields.date(3)?, fields.id(5)?))
        });
        let (recording, date, item) = match purchase {
            Ok(purchase) => purchase,
            Err(bad) => {
                bad_rows.push(Row {
                    location: Location::new(&label, line),
                    event: Err(bad),
                });
                return;
            }
        };
        rows += 1;
        starts.observe(recording.session, date, recording.timeframe);
        let (timeframe, user) = (recording.timeframe, recording.user);
        let index = match index_of.get(&recording.number) {
            Some(&index) => index,
            None => {
                index_of.insert(recording.number, orders.len());
                orders.push(recording.clone());
                orders.len() - 1
            }
        };
        let order = &mut orders[index];
        if timeframe < order.timeframe {
            *order = recording;
        }
        if timeframe == order.timeframe {
            order.add(item, user);
        }
    })?;
    Ok((orders, rows))
}

fn describe(files: &Files, views: &[View], orders: &[Order], purchase_rows: usize, categories: usize) -> String {
    let views = match &files.views {
        Some(path) => format!("{} item views from {}", views.len(), path.display()),
        None => "no views file".to_owned(),
    };
    let orders = match &files.purchases {
        Some(path) => {
            let replayed_rows: usize = orders
                .iter()
                .flat_map(|order| &order.items)
                .map(|(_, quantity)| *quantity as usize)
                .sum();
            format!(
                "{} orders from {purchase_rows} purchase rows of {} ({} rows record an order again later and are left out)",
                orders.len(),
                path.display(),
                purchase_rows.saturating_sub(replayed_rows)
            )
        }
        None => "no purchases file".to_owned(),
    };
    let categories = match &files.categories {
        Some(path) => format!("categories of {categories} products from {}", path.display()),
        None => "no categories file, so events carry no category".to_owned(),
    };
    format!("diginetica: {views}; {orders}; {categories}")
}

#[cfg(test)]
mod tests {
    use rtim_proto::json::{struct_to_json, timestamp_to_rfc3339};

    use super::*;

    const VIEWS: &str = "session_id;user_id;item_id;timeframe;eventdate
1;NA;81766;526309;2016-05-09
1;NA;31331;75848;2016-05-09
2;7;500;1000;2016-05-10
4;NA;abc;10;2016-05-09
";

    const PURCHASES: &str = "sessionId;userId;timeframe;eventdate;ordernumber;itemId
2;7;5000;2016-05-10;900;500
2;7;5000;2016-05-10;900;501
2;7;5000;2016-05-10;900;500
2;NA;90000000;2016-05-11;900;500
3;NA;1866073;2016-02-02;77;600
3;NA;7091627706;2016-04-24;78;601
";

    const CATEGORIES: &str = "itemId;categoryId
81766;1096
500;12
600;5
";

    fn dataset() -> tempfile::TempDir {
        let folder = tempfile::tempdir().unwrap();
        std::fs::write(folder.path().join("sample_train-item-views.csv"), VIEWS).unwrap();
        std::fs::write(folder.path().join(PURCHASES_FILE), PURCHASES).unwrap();
        std::fs::write(folder.path().join(CATEGORIES_FILE), CATEGORIES).unwrap();
        folder
    }

    fn replay(folder: &Path) -> Replay {
        Replay::load(&Files::locate(folder, None, None).unwrap()).unwrap()
    }

    fn rows(replay: &mut Replay) -> Vec<Row> {
        std::iter::from_fn(|| replay.next_row()).collect()
    }

    /// Event name, user id, anonymous id, time and properties of a row.
    fn summary(row: &Row) -> (String, String, String, String, Value) {
        let event = row.event.as_ref().unwrap();
        (
            event.event.clone(),
            event.user_id.clone(),
            event.anonymous_id.clone(),
            event.timestamp.as_ref().and_then(timestamp_to_rfc3339).unwrap(),
            struct_to_json(event.properties.as_ref()),
        )
    }

    #[test]
    fn events_merge_in_time_order() {
        let folder = dataset();
        let mut replay = replay(folder.path());
        let rows = rows(&mut replay);
        assert_eq!(rows.len(), 7, "one bad row, three views, three orders: {rows:?}");
        assert_eq!(replay.progress(), (7, 7), "progress counts every row");

        let bad = rows[0].event.as_ref().unwrap_err();
        assert_eq!(rows[0].location.line, 5, "line of the bad view");
        assert_eq!(bad.reason, "INVALID_ID");
        assert_eq!(bad.field, "item_id", "column as the header spells it");
        assert!(bad.detail.contains("'abc'"), "{bad}");

        let events: Vec<_> = rows[1..].iter().map(summary).collect();
        let session_3 = anonymous_id(3);
        let session_1 = anonymous_id(1);
        let expected = [
            (
                "Order Completed",
                "",
                session_3.as_str(),
                "2016-02-02T00:00:00.000Z",
                json!({"order_id": "77", "products": [{"product_id": "600", "category": "5", "quantity": 1}]}),
            ),
            (
                "Order Completed",
                "",
                session_3.as_str(),
                "2016-04-24T01:22:41.633Z",
                json!({"order_id": "78", "products": [{"product_id": "601", "quantity": 1}]}),
            ),
            (
                "Product Viewed",
                "",
                session_1.as_str(),
                "2016-05-09T00:00:00.000Z",
                json!({"product_id": "31331"}),
            ),
            (
                "Product Viewed",
                "",
                session_1.as_str(),
                "2016-05-09T00:07:30.461Z",
                json!({"product_id": "81766", "category": "1096"}),
            ),
            (
                "Product Viewed",
                "7",
                "",
                "2016-05-10T00:00:00.000Z",
                json!({"product_id": "500", "category": "12"}),
            ),
            (
                "Order Completed",
                "7",
                "",
                "2016-05-10T00:00:04.000Z",
                json!({"order_id": "900", "products": [
                    {"product_id": "500", "category": "12", "quantity": 2},
                    {"product_id": "501", "quantity": 1},
                ]}),
            ),
        ];
        for (index, (actual, expected)) in events.iter().zip(expected).enumerate() {
            let expected = (
                expected.0.to_owned(),
                expected.1.to_owned(),
                expected.2.to_owned(),
                expected.3.to_owned(),
                expected.4,
            );
            assert_eq!(actual, &expected, "event {index}");
        }
        assert_eq!(events.len(), 6, "events: {events:?}");
    }

    #[test]
    fn session_spanning_dates_keeps_its_offsets() {
        let folder = dataset();
        let mut replay = replay(folder.path());
        let order = rows(&mut replay)
            .into_iter()
            .filter(|row| row.event.is_ok())
            .find(|row| summary(row).4["order_id"] == "78")
            .unwrap();
        // The session starts 1,866,073 ms before 2016-02-02 (its other row has
        // that timeframe on that date); 7,091,627,706 ms after the start is
        // 2016-04-24 01:22:41.633, on the date of the row.
        assert_eq!(summary(&order).3, "2016-04-24T01:22:41.633Z");
    }

    #[test]
    fn ids_and_locations_derive_from_rows() {
        let folder = dataset();
        let mut replay = replay(folder.path());
        let rows: Vec<Row> = rows(&mut replay).into_iter().filter(|row| row.event.is_ok()).collect();
        let view = rows.iter().find(|row| summary(row).4["product_id"] == "81766").unwrap();
        let view_event = view.event.as_ref().unwrap();
        assert_eq!(
            view_event.message_id,
            source::message_id(&["diginetica", "sample_train-item-views.csv", "1"])
        );
        assert_eq!(view_event.session_id, "1");
        assert_eq!(view_event.r#type, EventType::Track as i32);
        assert_eq!(view.location.line, 2, "the header is line 1");

        let order = rows.iter().find(|row| summary(row).4["order_id"] == "900").unwrap();
        assert_eq!(
            order.event.as_ref().unwrap().message_id,
            source::message_id(&["diginetica", PURCHASES_FILE, "order", "900"])
        );
        assert_eq!(order.location.line, 2, "first row of the order's earliest recording");
        assert!(order.location.file.ends_with(PURCHASES_FILE));

        let again: Vec<String> = super::tests::rows(&mut super::tests::replay(folder.path()))
            .iter()
            .filter_map(|row| row.event.as_ref().ok().map(|event| event.message_id.clone()))
            .collect();
        let first: Vec<String> = rows
            .iter()
            .filter_map(|row| row.event.as_ref().ok().map(|event| event.message_id.clone()))
            .collect();
        assert_eq!(again, first, "a second load gives the same ids");
    }

    #[test]
    fn earliest_order_recording_wins() {
        let folder = tempfile::tempdir().unwrap();
        let purchases = "sessionId;userId;timeframe;eventdate;ordernumber;itemId
5;NA;90000000;2016-05-11;900;500
5;31908;5000;2016-05-10;900;500
5;31908;5000;2016-05-10;900;502
";
        std::fs::write(folder.path().join(PURCHASES_FILE), purchases).unwrap();
        let mut replay = replay(folder.path());
        let rows = rows(&mut replay);
        assert_eq!(rows.len(), 1);
        let (_, user, anonymous, time, properties) = summary(&rows[0]);
        assert_eq!(user, "31908", "user of the earliest recording");
        assert_eq!(anonymous, "");
        assert_eq!(time, "2016-05-10T00:00:00.000Z");
        assert_eq!(
            properties["products"],
            json!([{"product_id": "500", "quantity": 1}, {"product_id": "502", "quantity": 1}])
        );
        assert_eq!(rows[0].location.line, 3);
        assert!(
            replay.description().contains("1 rows record an order again later"),
            "{}",
            replay.description()
        );
    }

    #[test]
    fn folder_prefers_full_views_file() {
        let folder = dataset();
        std::fs::write(folder.path().join(VIEWS_FILES[0]), VIEWS).unwrap();
        let files = Files::locate(folder.path(), None, None).unwrap();
        assert_eq!(files.views, Some(folder.path().join("train-item-views.csv")));
        assert_eq!(files.purchases, Some(folder.path().join(PURCHASES_FILE)));
        assert_eq!(files.categories, Some(folder.path().join(CATEGORIES_FILE)));
    }

    #[test]
    fn file_is_told_apart_by_header() {
        let folder = dataset();
        let purchases = folder.path().join(PURCHASES_FILE);
        let files = Files::locate(&purchases, None, None).unwrap();
        assert_eq!(files.purchases, Some(purchases.clone()), "purchases file");
        assert_eq!(files.views, None, "no views");
        assert_eq!(
            files.categories,
            Some(folder.path().join(CATEGORIES_FILE)),
            "categories beside it"
        );

        let views = folder.path().join("sample_train-item-views.csv");
        let other = folder.path().join("elsewhere.csv");
        std::fs::write(&other, "sessionId;userId;timeframe;eventdate;ordernumber;itemId\n").unwrap();
        let files = Files::locate(&views, Some(&other), None).unwrap();
        assert_eq!(files.views, Some(views), "views file");
        assert_eq!(files.purchases, Some(other), "--purchases");
    }

    #[test]
    fn unknown_files_are_rejected() {
        let folder = dataset();
        let error = Files::locate(&folder.path().join(CATEGORIES_FILE), None, None).unwrap_err();
        assert!(error.to_string().contains("itemId;categoryId"), "{error}");

        let empty = tempfile::tempdir().unwrap();
        let error = Files::locate(empty.path(), None, None).unwrap_err();
        assert!(error.to_string().contains("train-purchases.csv"), "{error}");
    }

    #[test]
    fn bad_category_row_fails_the_load() {
        let folder = dataset();
        std::fs::write(
            folder.path().join(CATEGORIES_FILE),
            "itemId;categoryId\n500;12\n501;x\n",
        )
        .unwrap();
        let error = Replay::load(&Files::locate(folder.path(), None, None).unwrap())
            .err()
            .unwrap();
        let message = error.to_string();
        assert!(
            message.contains("product-categories.csv:3: categoryId (INVALID_ID)"),
            "{message}"
        );
    }

    #[test]
    fn missing_column_is_named() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join(PURCHASES_FILE);
        std::fs::write(&path, "sessionId;userId;timeframe;eventdate;itemId\n").unwrap();
        let files = Files {
            purchases: Some(path),
            ..Files::default()
        };
        let message = Replay::load(&files).err().unwrap().to_string();
        assert!(message.contains("has no column ordernumber"), "{message}");
    }
}
