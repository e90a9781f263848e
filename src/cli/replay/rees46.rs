//! The REES46 e-commerce events CSV, mapped onto Segment's e-commerce events:
//! view is Product Viewed, cart is Product Added, remove_from_cart is Product
//! Removed, purchase is Order Completed. Original timestamps are kept, and
//! message ids derive from the file name and row number, so a second replay
//! of the same file is recognised as duplicates.

use std::fs::File;
use std::path::Path;

use anyhow::Context;
use chrono::NaiveDateTime;
use rtim_proto::events::v1::{Event, EventType};
use rtim_proto::json::{datetime_to_timestamp, json_to_struct};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize)]
struct Row {
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
    name: String,
    rows: csv::DeserializeRecordsIntoIter<File, Row>,
    row_number: u64,
    position: u64,
}

impl Reader {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut reader = csv::Reader::from_reader(file);
        check_header(&mut reader).with_context(|| format!("{} is not a REES46 events file", path.display()))?;
        Ok(Self {
            name,
            rows: reader.into_deserialize(),
            row_number: 0,
            position: 0,
        })
    }

    /// Bytes read so far, for progress.
    pub fn byte_position(&self) -> u64 {
        self.position
    }

    /// Reads the next event, or the reason the row could not be mapped.
    pub fn next_event(&mut self) -> Option<Result<Event, &'static str>> {
        let row = self.rows.next()?;
        self.row_number += 1;
        self.position = self.rows.reader().position().byte();
        Some(match row {
            Ok(row) => self.map(row),
            Err(_) => Err("UNREADABLE_ROW"),
        })
    }

    fn map(&self, row: Row) -> Result<Event, &'static str> {
        let name = match row.event_type.as_str() {
            "view" => "Product Viewed",
            "cart" => "Product Added",
            "remove_from_cart" => "Product Removed",
            "purchase" => "Order Completed",
            _ => return Err("UNKNOWN_EVENT_TYPE"),
        };
        let time = NaiveDateTime::parse_from_str(&row.event_time, "%Y-%m-%d %H:%M:%S UTC")
            .map_err(|_| "INVALID_EVENT_TIME")?
            .and_utc();
        let price: f64 = row.price.parse().map_err(|_| "INVALID_PRICE")?;
        if !price.is_finite() || price < 0.0 {
            return Err("INVALID_PRICE");
        }
        if row.product_id.trim().is_empty() {
            return Err("MISSING_PRODUCT_ID");
        }
        if row.user_id.trim().is_empty() {
            return Err("MISSING_USER_ID");
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

        let message_id = uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_URL,
            format!("rtim:replay:rees46:{}:{}", self.name, self.row_number).as_bytes(),
        );
        Ok(Event {
            message_id: message_id.to_string(),
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
