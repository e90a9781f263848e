//! The REES46 e-commerce events CSV, mapped onto Segment's e-commerce events:
//! view is Product Viewed, cart is Product Added, remove_from_cart is Product
//! Removed, purchase is Order Completed. Original timestamps are kept, and
//! message ids derive from the file name and row number, so a second replay
//! of the same file is recognised as duplicates.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use chrono::NaiveDateTime;
use rtim_proto::events::v1::{Event, EventType};
use rtim_proto::json::{datetime_to_timestamp, json_to_struct};
use serde::Deserialize;
use serde_json::json;

use super::source::{self, BadRow, Location, ProgressUnit, Row, Source, preview};

#[derive(Debug, Deserialize)]
struct Rees46Row {
    event_time: String,
    event_type: String,
    product_id: String,
    category_id: String,
    category_code: String,
    brand: String,
    price: String,
    user_id: String,
    user_session: String,
}

/// Columns every REES46 events file has, in any order.
const COLUMNS: [&str; 9] = [
    "event_time",
    "event_type",
    "product_id",
    "category_id",
    "category_code",
    "brand",
    "price",
    "user_id",
    "user_session",
];

fn check_header(reader: &mut csv::Reader<File>) -> anyhow::Result<()> {
    let header = reader.headers().context("cannot read the header row")?;
    let missing: Vec<&str> = COLUMNS
        .into_iter()
        .filter(|column| !header.iter().any(|name| name == *column))
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "missing columns {}; the header has {}",
            missing.join(", "),
            header.iter().collect::<Vec<_>>().join(",")
        );
    }
    Ok(())
}

pub struct Reader {
    label: Arc<str>,
    name: String,
    reader: csv::Reader<File>,
    headers: csv::StringRecord,
    record: csv::StringRecord,
    row_number: u64,
    size: u64,
    failed: bool,
}

impl Reader {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let size = file.metadata().map(|metadata| metadata.len()).unwrap_or(0);
        let mut reader = csv::Reader::from_reader(file);
        check_header(&mut reader).with_context(|| format!("{} is not a REES46 events file", path.display()))?;
        let headers = reader.headers().context("cannot read the header row")?.clone();
        Ok(Self {
            label: source::label(path),
            name: source::file_name(path),
            reader,
            headers,
            record: csv::StringRecord::new(),
            row_number: 0,
            size,
            failed: false,
        })
    }

    fn map(&self, row: Rees46Row) -> Result<Event, BadRow> {
        let name = match row.event_type.as_str() {
            "view" => "Product Viewed",
            "cart" => "Product Added",
            "remove_from_cart" => "Product Removed",
            "purchase" => "Order Completed",
            other => {
                let detail = format!(
                    "unknown event type {}: expected view, cart, remove_from_cart or purchase",
                    preview(other)
                );
                return Err(BadRow::new("UNKNOWN_EVENT_TYPE", "event_type", detail));
            }
        };
        let time = NaiveDateTime::parse_from_str(&row.event_time, "%Y-%m-%d %H:%M:%S UTC")
            .map_err(|_| {
                let detail = format!(
                    "{} is not a time such as 2019-10-01 00:00:00 UTC",
                    preview(&row.event_time)
                );
                BadRow::new("INVALID_EVENT_TIME", "event_time", detail)
            })?
            .and_utc();
        let price = row
            .price
            .parse::<f64>()
            .ok()
            .filter(|price| price.is_finite() && *price >= 0.0)
            .ok_or_else(|| {
                let detail = format!("{} is not a price of zero or more", preview(&row.price));
                BadRow::new("INVALID_PRICE", "price", detail)
            })?;
        if row.product_id.trim().is_empty() {
            return Err(BadRow::new(
                "MISSING_PRODUCT_ID",
                "product_id",
                "the product id is empty",
            ));
        }
        if row.user_id.trim().is_empty() {
            return Err(BadRow::new("MISSING_USER_ID", "user_id", "the user id is empty"));
        }
        let category = if row.category_code.is_empty() {
            row.category_id.clone()
        } else {
            row.category_code.clone()
        };

        let mut properties = json!({
            "product_id": row.product_id,
            "category": category,
            "category_id": row.category_id,
            "price": price,
            "quantity": 1,
        });
        if !row.brand.is_empty() {
            properties["brand"] = json!(row.brand);
        }
        if name == "Order Completed" {
            let product = properties.clone();
            properties["order_id"] = json!(format!("{}-{}", row.user_session, self.row_number));
            properties["revenue"] = json!(price);
            properties["currency"] = json!("USD");
            properties["products"] = json!([product]);
        }
        let serde_json::Value::Object(properties) = properties else {
            unreachable!("properties is built as an object above");
        };

        let row_number = self.row_number.to_string();
        Ok(Event {
            message_id: source::message_id(&["rees46", &self.name, &row_number]),
            r#type: EventType::Track as i32,
            user_id: row.user_id,
            event: name.to_owned(),
            properties: Some(json_to_struct(properties)),
            timestamp: Some(datetime_to_timestamp(time)),
            session_id: row.user_session,
            ..Event::default()
        })
    }
}

impl Source for Reader {
    fn next_row(&mut self) -> Option<Row> {
        if self.failed {
            return None;
        }
        let next_line = self.reader.position().line();
        let (line, event) = match self.reader.read_record(&mut self.record) {
            Ok(false) => return None,
            Ok(true) => {
                self.row_number += 1;
                let line = self.record.position().map_or(next_line, csv::Position::line);
                match self.record.deserialize::<Rees46Row>(Some(&self.headers)) {
                    Ok(row) => (line, self.map(row)),
                    Err(error) => (line, Err(unreadable(&error))),
                }
            }
            Err(error) => {
                self.row_number += 1;
                // A read error leaves the reader where it was, so reading on would repeat it.
                self.failed = matches!(error.kind(), csv::ErrorKind::Io(_));
                let line = error.position().map_or(next_line, csv::Position::line);
                (line, Err(unreadable(&error)))
            }
        };
        Some(Row {
            location: Location::new(&self.label, line),
            event,
        })
    }

    fn progress(&self) -> (u64, u64) {
        (self.reader.position().byte(), self.size)
    }

    fn unit(&self) -> ProgressUnit {
        ProgressUnit::Bytes
    }
}

fn unreadable(error: &csv::Error) -> BadRow {
    BadRow::new("UNREADABLE_ROW", "row", error.to_string())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use rtim_proto::json::{struct_to_json, timestamp_to_rfc3339};

    use super::*;

    const HEADER: &str = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session";

    fn rows(lines: &[&str]) -> (tempfile::NamedTempFile, Vec<Row>) {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "{HEADER}").unwrap();
        for line in lines {
            writeln!(file, "{line}").unwrap();
        }
        let mut reader = Reader::open(file.path()).unwrap();
        let rows = std::iter::from_fn(|| reader.next_row()).collect();
        (file, rows)
    }

    #[test]
    fn purchase_maps_to_order_completed() {
        let (file, rows) = rows(&[
            "2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,72d76fde",
            "2019-10-01 00:02:14 UTC,purchase,1004856,2053013555631882655,electronics.smartphone,samsung,130.76,554754734,9a1b",
        ]);
        let view = rows[0].event.as_ref().unwrap();
        assert_eq!(view.event, "Product Viewed");
        assert_eq!(
            struct_to_json(view.properties.as_ref()),
            json!({"product_id": "44600062", "category": "2103807459595387724",
                   "category_id": "2103807459595387724", "price": 35.79, "quantity": 1, "brand": "shiseido"}),
            "category falls back to the category id"
        );

        let order = rows[1].event.as_ref().unwrap();
        assert_eq!(order.event, "Order Completed");
        assert_eq!(order.user_id, "554754734");
        assert_eq!(order.session_id, "9a1b");
        assert_eq!(
            order.timestamp.as_ref().and_then(timestamp_to_rfc3339).as_deref(),
            Some("2019-10-01T00:02:14.000Z")
        );
        let properties = struct_to_json(order.properties.as_ref());
        assert_eq!(properties["order_id"], "9a1b-2", "session and row number");
        assert_eq!(properties["revenue"], 130.76);
        assert_eq!(properties["category"], "electronics.smartphone");
        assert_eq!(properties["products"][0]["product_id"], "1004856");
        let name = file.path().file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(order.message_id, source::message_id(&["rees46", &name, "2"]));
        assert_eq!(rows[1].location.line, 3, "the header is line 1");
    }

    #[test]
    fn bad_rows_name_line_and_column() {
        let (_file, rows) = rows(&[
            "2019-10-01 00:00:00 UTC,refund,1,2,,b,1.00,3,s",
            "yesterday,view,1,2,,b,1.00,3,s",
            "2019-10-01 00:00:00 UTC,view,1,2,,b,-4,3,s",
            "2019-10-01 00:00:00 UTC,view,1,2,,b",
            "2019-10-01 00:00:00 UTC,view,1,2,,b,1.00,,s",
        ]);
        let found: Vec<(u64, &str, &str)> = rows
            .iter()
            .map(|row| {
                let bad = row.event.as_ref().unwrap_err();
                (row.location.line, bad.reason, bad.field.as_str())
            })
            .collect();
        assert_eq!(
            found,
            [
                (2, "UNKNOWN_EVENT_TYPE", "event_type"),
                (3, "INVALID_EVENT_TIME", "event_time"),
                (4, "INVALID_PRICE", "price"),
                (5, "UNREADABLE_ROW", "row"),
                (6, "MISSING_USER_ID", "user_id"),
            ]
        );
        let price = rows[2].event.as_ref().unwrap_err();
        assert_eq!(price.detail, "'-4' is not a price of zero or more");
    }
}
