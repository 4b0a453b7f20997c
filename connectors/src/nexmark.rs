//! The `nexmark` source: the Nexmark benchmark's auction-site events (persons, auctions, bids).
//!
//! Events are numbered; out of every 50, 1 is a person, 3 are auctions and 46 are bids, as in the
//! Nexmark generator of Beam and Flink. Event `n` happens at `base + n / events-per-second`, so
//! the stream is reproducible: a bid names an auction and a bidder created shortly before it
//! (mostly "hot" ones), prices and categories are drawn from fixed distributions seeded by the
//! event number. A table declares which events it holds and which of their fields it wants:
//! - `'nexmark.table.type' = 'bid' | 'auction' | 'person'` (RisingWave also spells it `Bid`);
//! - `'nexmark.events-per-second'` (also `nexmark.event.rate`; default 10000) and
//!   `'nexmark.events.num'` / `nexmark.event.num` (total events; default unbounded);
//! - `'nexmark.event-time.events-per-second'`: how fast event time runs, when it should differ
//!   from the generation rate (a benchmark generates 10 minutes of event time as fast as it can);
//! - `'nexmark.base-time-ms'` (milliseconds since 1970): the time of event 0. The server sets it
//!   to the table's creation time when it is not given, so tables created one after the other
//!   have timelines apart by the time between them; tables joined on time (a bid within its
//!   auction's lifetime, persons and auctions in one window) share one by giving the same value;
//! - `'nexmark.max-out-of-orderness'` (milliseconds, default 0): each event's time is moved back
//!   by a seeded random amount up to this, so event time is out of order as in real streams;
//! - columns are matched by name: bid `auction, bidder, price, channel, url, date_time, extra`;
//!   auction `id, item_name, description, initial_bid, reserve, date_time, expires, seller,
//!   category, extra`; person `id, name, email_address, credit_card, city, state, date_time,
//!   extra`. `ts`, `event_time` and `datetime` are accepted for `date_time`.
//!
//! Rows are inserted with the generator's position in one atomic commit, as for `datagen`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::{
    ArrayRef, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use rivulet_engine::state::StateStore;
use rivulet_engine::table::TableStore;

use crate::{ConnectorError, Result};

const PROPORTION: u64 = 50;
const PERSONS: u64 = 1;
const AUCTIONS: u64 = 3;
const FIRST_ID: i64 = 1000;
/// Events per commit, at most.
const BATCH_EVENTS: u64 = 16_384;

const FIRST_NAMES: &[&str] = &[
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: &[&str] = &[
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
const CITIES: &[&str] = &[
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const STATES: &[&str] = &["AZ", "CA", "ID", "OR", "WA", "WY"];
const CHANNELS: &[&str] = &["apple", "google", "facebook", "baidu"];

/// Which events a table holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Person,
    Auction,
    Bid,
}

/// A Nexmark field a column is filled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    Id,
    Name,
    Email,
    CreditCard,
    City,
    State,
    DateTime,
    Extra,
    ItemName,
    Description,
    InitialBid,
    Reserve,
    Expires,
    Seller,
    Category,
    Auction,
    Bidder,
    Price,
    Channel,
    Url,
}

/// A parsed nexmark table definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Nexmark {
    kind: Kind,
    events_per_second: f64,
    events: Option<u64>,
    columns: Vec<Col>,
    schema: SchemaRef,
    /// Event time of event 0, in microseconds since the epoch (fixed when the table is created).
    base: i64,
    /// Largest amount an event's time is moved back, in microseconds.
    out_of_orderness: i64,
    /// Events per second of event time.
    time_rate: f64,
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn rand(n: u64, salt: u64) -> u64 {
    mix(n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt.wrapping_mul(0xd1b5_4a32_d192_ed03))
}

fn pick<'a>(list: &[&'a str], n: u64, salt: u64) -> &'a str {
    list[(rand(n, salt) % list.len() as u64) as usize]
}

/// How many events of `kind` come before event `n`.
fn count_before(n: u64, kind: Kind) -> u64 {
    let (epoch, offset) = (n / PROPORTION, n % PROPORTION);
    let (lo, hi) = match kind {
        Kind::Person => (0, PERSONS),
        Kind::Auction => (PERSONS, PERSONS + AUCTIONS),
        Kind::Bid => (PERSONS + AUCTIONS, PROPORTION),
    };
    epoch * (hi - lo) + offset.clamp(lo, hi) - lo
}

/// The number of the event that is the `i`-th event of `kind`.
fn event_of(i: u64, kind: Kind) -> u64 {
    let (lo, width) = match kind {
        Kind::Person => (0, PERSONS),
        Kind::Auction => (PERSONS, AUCTIONS),
        Kind::Bid => (PERSONS + AUCTIONS, PROPORTION - PERSONS - AUCTIONS),
    };
    (i / width) * PROPORTION + lo + i % width
}

impl Nexmark {
    /// Reads the options of a table with `connector = 'nexmark'`; `schema` is the table's.
    pub fn parse(schema: &SchemaRef, options: &BTreeMap<String, String>) -> Result<Nexmark> {
        let get = |keys: &[&str]| keys.iter().find_map(|k| options.get(*k).cloned());
        let bad = |key: &str, v: &str, expected: &str| {
            ConnectorError::Option(format!(
                "invalid value for nexmark option \"{key}\": \"{v}\" (expected {expected})"
            ))
        };
        let kind = match get(&["nexmark.table.type"])
            .map(|v| v.to_lowercase())
            .as_deref()
        {
            Some("bid") => Kind::Bid,
            Some("auction") => Kind::Auction,
            Some("person") => Kind::Person,
            Some(other) => return Err(bad("nexmark.table.type", other, "bid, auction or person")),
            None => {
                return Err(ConnectorError::Option(
                    "a nexmark table needs the option 'nexmark.table.type' (bid, auction or person)".into(),
                ));
            }
        };
        let events_per_second = match get(&["nexmark.events-per-second", "nexmark.event.rate"]) {
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|r| r.is_finite() && *r > 0.0)
                .ok_or_else(|| bad("nexmark.events-per-second", &v, "a positive number"))?,
            None => 10_000.0,
        };
        let events = get(&["nexmark.events.num", "nexmark.event.num"])
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| bad("nexmark.events.num", &v, "a whole number"))
            })
            .transpose()?;
        let columns = schema
            .fields()
            .iter()
            .map(|f| column(kind, &f.name().to_lowercase()))
            .collect::<Result<Vec<_>>>()?;
        let time_rate = match get(&["nexmark.event-time.events-per-second"]) {
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|r| r.is_finite() && *r > 0.0)
                .ok_or_else(|| {
                    bad(
                        "nexmark.event-time.events-per-second",
                        &v,
                        "a positive number",
                    )
                })?,
            None => events_per_second,
        };
        let out_of_orderness = match get(&[
            "nexmark.max-out-of-orderness",
            "nexmark.max.out.of.orderness",
        ]) {
            Some(v) => {
                v.trim()
                    .trim_end_matches("ms")
                    .trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|m| *m >= 0)
                    .ok_or_else(|| bad("nexmark.max-out-of-orderness", &v, "milliseconds"))?
                    * 1000
            }
            None => 0,
        };
        let base = match get(&["nexmark.base-time-ms"]) {
            Some(v) => {
                v.parse::<i64>()
                    .map_err(|_| bad("nexmark.base-time-ms", &v, "milliseconds since 1970"))?
                    * 1000
            }
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_micros() as i64)
                .unwrap_or(0),
        };
        Ok(Nexmark {
            kind,
            events_per_second,
            events,
            columns,
            schema: Arc::clone(schema),
            base,
            out_of_orderness,
            time_rate,
        })
    }

    /// The event time of event `n`.
    fn time(&self, n: u64) -> i64 {
        let late = match self.out_of_orderness {
            0 => 0,
            m => (rand(n, 27) % (m as u64 + 1)) as i64,
        };
        self.base + (n as f64 * 1e6 / self.time_rate) as i64 - late
    }

    /// The rows of this table's kind among events `from..to`.
    pub fn rows(&self, from: u64, to: u64) -> Result<RecordBatch> {
        let first = count_before(from, self.kind);
        let last = count_before(to, self.kind);
        let events: Vec<u64> = (first..last).map(|i| event_of(i, self.kind)).collect();
        let columns = self
            .columns
            .iter()
            .zip(self.schema.fields())
            .map(|(c, f)| {
                let built = self.column(*c, &events);
                if built.data_type() == f.data_type() {
                    Ok(built)
                } else {
                    cast(&built, f.data_type()).map_err(ConnectorError::from)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let options = datafusion::arrow::record_batch::RecordBatchOptions::new()
            .with_row_count(Some(events.len()));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &options,
        )?)
    }

    fn column(&self, col: Col, events: &[u64]) -> ArrayRef {
        let ints = |f: &dyn Fn(u64) -> i64| {
            let mut b = Int64Builder::with_capacity(events.len());
            for &n in events {
                b.append_value(f(n));
            }
            Arc::new(b.finish()) as ArrayRef
        };
        let texts = |f: &dyn Fn(u64) -> String| {
            let mut b = StringBuilder::new();
            for &n in events {
                b.append_value(f(n));
            }
            Arc::new(b.finish()) as ArrayRef
        };
        // The newest person and auction before event `n` (ids grow with event numbers).
        let last_person =
            |n: u64| FIRST_ID + count_before(n, Kind::Person).saturating_sub(1) as i64;
        let last_auction =
            |n: u64| FIRST_ID + count_before(n, Kind::Auction).saturating_sub(1) as i64;
        match col {
            Col::DateTime => {
                let mut b = TimestampMicrosecondBuilder::with_capacity(events.len());
                for &n in events {
                    b.append_value(self.time(n));
                }
                Arc::new(b.finish())
            }
            Col::Expires => {
                let mut b = TimestampMicrosecondBuilder::with_capacity(events.len());
                for &n in events {
                    b.append_value(self.time(n) + 10_000_000 + (rand(n, 9) % 20_000_000) as i64);
                }
                Arc::new(b.finish())
            }
            Col::Id => match self.kind {
                Kind::Person => ints(&|n| FIRST_ID + count_before(n, Kind::Person) as i64),
                _ => ints(&|n| FIRST_ID + count_before(n, Kind::Auction) as i64),
            },
            Col::Name => {
                texts(&|n| format!("{} {}", pick(FIRST_NAMES, n, 1), pick(LAST_NAMES, n, 2)))
            }
            Col::Email => texts(&|n| {
                format!(
                    "{}@{}.com",
                    pick(LAST_NAMES, n, 3).to_lowercase(),
                    rand(n, 4) % 1000
                )
            }),
            Col::CreditCard => texts(&|n| {
                let r = rand(n, 5);
                format!(
                    "{:04} {:04} {:04} {:04}",
                    r % 10_000,
                    r / 10_000 % 10_000,
                    r / 100_000_000 % 10_000,
                    r / 1_000_000_000_000 % 10_000
                )
            }),
            Col::City => texts(&|n| pick(CITIES, n, 6).to_string()),
            Col::State => texts(&|n| pick(STATES, n, 7).to_string()),
            Col::Extra => texts(&|n| format!("{:x}", rand(n, 8))),
            Col::ItemName => texts(&|n| format!("item-{}", rand(n, 10) % 10_000)),
            Col::Description => texts(&|n| format!("description of item {}", rand(n, 11) % 10_000)),
            Col::InitialBid => ints(&|n| 1 + (rand(n, 12) % 1_000) as i64),
            Col::Reserve => ints(&|n| 1_000 + (rand(n, 13) % 10_000) as i64),
            Col::Seller => ints(&|n| {
                // Mostly a recent (hot) seller, sometimes any earlier one.
                let newest = last_person(n);
                if !rand(n, 14).is_multiple_of(4) {
                    (newest - (rand(n, 15) % 10) as i64).max(FIRST_ID)
                } else {
                    FIRST_ID + (rand(n, 16) % (newest - FIRST_ID + 1).max(1) as u64) as i64
                }
            }),
            Col::Category => ints(&|n| 10 + (rand(n, 17) % 5) as i64),
            Col::Auction => ints(&|n| {
                let newest = last_auction(n);
                if rand(n, 18).is_multiple_of(2) {
                    // One of the hot auctions: the 100 newest.
                    (newest - (rand(n, 19) % 100) as i64).max(FIRST_ID)
                } else {
                    FIRST_ID + (rand(n, 20) % (newest - FIRST_ID + 1).max(1) as u64) as i64
                }
            }),
            Col::Bidder => ints(&|n| {
                let newest = last_person(n);
                if !rand(n, 21).is_multiple_of(4) {
                    (newest - (rand(n, 22) % 100) as i64).max(FIRST_ID)
                } else {
                    FIRST_ID + (rand(n, 23) % (newest - FIRST_ID + 1).max(1) as u64) as i64
                }
            }),
            Col::Price => ints(&|n| {
                // Skewed towards small prices, as Nexmark's `nextPrice`.
                let r = (rand(n, 24) >> 11) as f64 / (1u64 << 53) as f64;
                (10f64.powf(r * 6.0) * 100.0) as i64
            }),
            Col::Channel => texts(&|n| pick(CHANNELS, n, 25).to_string()),
            Col::Url => texts(&|n| {
                format!(
                    "https://www.nexmark.com/{}/item.htm?query=1&channel_id={}",
                    pick(CHANNELS, n, 25),
                    rand(n, 26) % 1000
                )
            }),
        }
    }
}

fn column(kind: Kind, name: &str) -> Result<Col> {
    let time = matches!(name, "date_time" | "datetime" | "ts" | "event_time");
    let col = match kind {
        Kind::Person => match name {
            "id" => Col::Id,
            "name" => Col::Name,
            "email_address" | "email" => Col::Email,
            "credit_card" => Col::CreditCard,
            "city" => Col::City,
            "state" => Col::State,
            "extra" => Col::Extra,
            _ if time => Col::DateTime,
            _ => {
                return Err(unknown(
                    name,
                    "id, name, email_address, credit_card, city, state, date_time, extra",
                ));
            }
        },
        Kind::Auction => match name {
            "id" => Col::Id,
            "item_name" => Col::ItemName,
            "description" => Col::Description,
            "initial_bid" => Col::InitialBid,
            "reserve" => Col::Reserve,
            "expires" => Col::Expires,
            "seller" => Col::Seller,
            "category" => Col::Category,
            "extra" => Col::Extra,
            _ if time => Col::DateTime,
            _ => {
                return Err(unknown(
                    name,
                    "id, item_name, description, initial_bid, reserve, date_time, expires, seller, category, extra",
                ));
            }
        },
        Kind::Bid => match name {
            "auction" => Col::Auction,
            "bidder" => Col::Bidder,
            "price" => Col::Price,
            "channel" => Col::Channel,
            "url" => Col::Url,
            "extra" => Col::Extra,
            _ if time => Col::DateTime,
            _ => {
                return Err(unknown(
                    name,
                    "auction, bidder, price, channel, url, date_time, extra",
                ));
            }
        },
    };
    Ok(col)
}

fn unknown(name: &str, fields: &str) -> ConnectorError {
    ConnectorError::Option(format!(
        "nexmark has no field for column \"{name}\" (its fields: {fields})"
    ))
}

/// The generator as a source each job reads itself, storing nothing (`CREATE SOURCE`).
pub fn source(generator: Nexmark) -> crate::generator::GeneratorSource {
    let (rate, total) = (generator.events_per_second, generator.events);
    let rows: crate::Rows = Arc::new(move |from, to| generator.rows(from, to));
    crate::generator::GeneratorSource::new("nexmark", rows, rate, total)
}

/// Generates events into `table` at the configured rate until the generator ends or the task
/// is dropped.
pub async fn run(generator: Nexmark, store: StateStore, table: Arc<TableStore>) -> Result<()> {
    let (rate, total) = (generator.events_per_second, generator.events);
    let rows: crate::Rows = Arc::new(move |from, to| generator.rows(from, to));
    crate::generate(store, table, rate, total, BATCH_EVENTS, rows).await
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit};

    use super::*;

    #[test]
    fn proportions_and_references() {
        for kind in [Kind::Person, Kind::Auction, Kind::Bid] {
            for i in 0..200 {
                assert_eq!(count_before(event_of(i, kind), kind), i, "{kind:?} {i}");
            }
        }
        assert_eq!(count_before(5000, Kind::Bid), 4600);
        let schema = Arc::new(Schema::new(vec![
            Field::new("auction", DataType::Int64, true),
            Field::new("bidder", DataType::Int64, true),
            Field::new("price", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ]));
        let options: BTreeMap<String, String> = [
            ("nexmark.table.type", "Bid"),
            ("nexmark.events-per-second", "1000"),
            ("nexmark.base-time-ms", "0"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let g = Nexmark::parse(&schema, &options).unwrap();
        let rows = g.rows(0, 5000).unwrap();
        assert_eq!(rows.num_rows(), 4600);
        assert_eq!(rows, g.rows(0, 5000).unwrap());
        // Bids name auctions and persons that exist by then.
        let auctions = rows.column(0).as_primitive::<Int64Type>();
        let bidders = rows.column(1).as_primitive::<Int64Type>();
        assert!(
            auctions
                .values()
                .iter()
                .all(|a| (FIRST_ID..FIRST_ID + 300).contains(a))
        );
        assert!(
            bidders
                .values()
                .iter()
                .all(|b| (FIRST_ID..FIRST_ID + 100).contains(b))
        );
        let err = Nexmark::parse(&schema, &BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("nexmark.table.type"), "{err}");
    }
}
