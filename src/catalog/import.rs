//! Loading a catalog: `bazar-catalog import FILE` (API.md, "Loading a catalog").
//!
//! Every row of the file is read and checked before anything changes; the first bad row
//! stops the import with its line and a reason, and the data directory is left as it was.
//! The books then replace the catalog as one durable write, numbered after the catalog's
//! last, under a new history, so that replicas copy the new catalog whole.

use super::state::{check_text, Catalog};
use super::store::{new_history_id, Store};
use crate::config::{self, Env};
use crate::money::Money;
use crate::wire::Book;
use std::path::Path;
use std::process::ExitCode;

/// The header a catalog file must have (that of `data/books.csv`).
pub const HEADER: &str = "id,title,topic,price,quantity";

/// Why an import was refused: the line of the file and what is wrong there.
#[derive(Debug, PartialEq, Eq)]
pub struct ImportError {
    /// 1-based line in the file (0: the file as a whole).
    pub line: u64,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            f.write_str(&self.reason)
        } else {
            write!(f, "line {}: {}", self.line, self.reason)
        }
    }
}

/// Reads and checks every row of a catalog file (header `id,title,topic,price,quantity`)
/// before anything is changed: the first bad row is named by its line.
pub fn read_import(file: &Path) -> std::result::Result<Catalog, ImportError> {
    let whole = |reason: String| ImportError { line: 0, reason };
    let text = std::fs::read(file).map_err(|e| whole(format!("cannot read {}: {e}", file.display())))?;
    parse_import(&text)
}

/// Checks every row of a catalog file's `text` and builds the catalog (at write 0).
fn parse_import(text: &[u8]) -> std::result::Result<Catalog, ImportError> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(text);
    let header = reader.headers().map_err(|e| ImportError { line: 1, reason: e.to_string() })?.clone();
    if header.iter().collect::<Vec<_>>().join(",") != HEADER {
        return Err(ImportError { line: 1, reason: format!("the header must be {HEADER}") });
    }
    // The csv crate counts a record from the blank lines it skipped before it: count them off.
    let line_of = |p: &csv::Position| {
        let blank = text[p.byte() as usize..].iter().take_while(|&&b| b == b'\n' || b == b'\r');
        p.line() + blank.filter(|&&b| b == b'\n').count() as u64
    };
    let mut catalog = Catalog::default();
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(line, line_of);
                let reason = match e.kind() {
                    csv::ErrorKind::UnequalLengths { len, .. } => format!("{len} columns; a row has 5"),
                    csv::ErrorKind::Utf8 { .. } => "not UTF-8".into(),
                    _ => e.to_string(),
                };
                return Err(ImportError { line, reason });
            }
        }
        let line = record.position().map_or(line, line_of);
        let bad = |reason: String| ImportError { line, reason };
        let id: u32 = crate::http::parse_id(&record[0]).map_err(|e| bad(e.to_string()))?;
        let (title, topic) = (record[1].to_string(), record[2].to_string());
        check_text("title", &title).map_err(bad)?;
        check_text("topic", &topic).map_err(bad)?;
        let price: Money = record[3].parse().map_err(bad)?;
        let quantity: u32 =
            record[4].parse().map_err(|_| bad(format!("quantity {:?} is not a whole number", &record[4])))?;
        if catalog.book(id).is_ok() {
            // Rare: look for the first one again rather than keep every id's line.
            let mut again = csv::Reader::from_reader(text);
            let first = again
                .records()
                .flatten()
                .find(|r| crate::http::parse_id(&r[0]).is_ok_and(|i| i == id))
                .and_then(|r| r.position().map(line_of))
                .unwrap_or(0);
            return Err(bad(format!("book id {id} appears twice (first on line {first})")));
        }
        catalog.insert_new(Book { id, title, topic, price, quantity }).map_err(bad)?;
    }
    Ok(catalog)
}

/// `bazar-catalog import FILE`: replaces the catalog in `dir` with the books of `file` as
/// one durable write (numbered after the catalog's last), or changes nothing.
pub fn import(dir: &Path, file: &Path) -> std::result::Result<(usize, u64), ImportError> {
    replace_with(dir, read_import(file)?)
}

/// `bazar-catalog start-over`: replaces the catalog in `dir` with the built-in one, as an
/// import of it: the explicit act that starts a store over (its replicas copy it; see
/// README, "Storage faults").
pub fn start_over(dir: &Path) -> std::result::Result<(usize, u64), ImportError> {
    replace_with(dir, parse_import(super::store::SEED.as_bytes())?)
}

/// Replaces the catalog in `dir` with `catalog` as one durable write, numbered after the
/// catalog's last, under a new history.
fn replace_with(dir: &Path, mut catalog: Catalog) -> std::result::Result<(usize, u64), ImportError> {
    let whole = |reason: String| ImportError { line: 0, reason };
    let (mut store, old, recent) = Store::open_for_import(dir).map_err(|e| whole(e.to_string()))?;
    catalog.raise_seq(old.seq() + 1);
    let history = new_history_id().map_err(|e| whole(e.to_string()))?;
    let epoch = store.last_epoch();
    let chain = Some(super::store::chain_start(&history, catalog.seq()));
    store.replace(&catalog, &history, epoch, chain, &recent.journal).map_err(|e| whole(e.to_string()))?;
    Ok((catalog.len(), catalog.seq()))
}

/// `bazar-catalog start-over` (no argument): prints what it did (exit 0) or why not (exit 1).
pub fn start_over_command(args: &[String]) -> ExitCode {
    if !args.is_empty() {
        eprintln!("usage: bazar-catalog start-over (with BAZAR_DATA_DIR set to the stopped catalog's directory)");
        return ExitCode::from(crate::service::EXIT_CONFIG);
    }
    let dir = config::data_dir(&Env, "./data-catalog");
    match start_over(&dir) {
        Ok((books, seq)) => {
            println!(
                "{} starts over with the {books} built-in books (write {seq}, a new history): its replicas copy it",
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bazar-catalog start-over: {e}; nothing was changed");
            ExitCode::FAILURE
        }
    }
}

/// `bazar-catalog import FILE`: prints how many books it loaded (exit 0), or the bad line
/// (exit 1); a usage error exits 2.
pub fn command(args: &[String]) -> ExitCode {
    let [file] = args else {
        eprintln!("usage: bazar-catalog import FILE (with BAZAR_DATA_DIR set to the stopped catalog's directory)");
        return ExitCode::from(crate::service::EXIT_CONFIG);
    };
    let dir = config::data_dir(&Env, "./data-catalog");
    let started = std::time::Instant::now();
    match import(&dir, Path::new(file)) {
        Ok((books, seq)) => {
            println!(
                "imported {books} books from {file} into {} (write {seq}) in {:.1} s",
                dir.display(),
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bazar-catalog import: {file}: {e}; nothing was changed");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::state::{Draft, Write as W};
    use crate::wire::Order;
    use std::fs;

    #[test]
    fn imports_replace_everything_or_nothing() {
        let dir = std::env::temp_dir().join(format!("bazar-import-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (mut store, mut catalog, _) = Store::open(&dir).unwrap();
        let mut w = Draft::new(&catalog).write(3, &W::Purchase).unwrap();
        w.order = Some(Order {
            order_id: "i-1".into(),
            id: 3,
            title: w.book.title.clone(),
            price: w.book.price,
            at: "2026-11-24T00:00:00.000Z".into(),
        });
        store.append(&[&w]).unwrap();
        catalog.commit(w.book.clone(), w.seq);
        drop(store);
        let before = (fs::read(dir.join("catalog.log")).unwrap(), fs::read(dir.join("books.csv")).unwrap());
        let file = dir.join("in.csv");
        let cases = [
            ("id,title,topic,price,quantity\n1,A,t,1.00,1\n2,B,t\n", "line 3: 3 columns; a row has 5"),
            (
                "id,title,topic,price,quantity\n1,A,t,1.00,1\n1,B,t,1.00,1\n",
                "line 3: book id 1 appears twice (first on line 2)",
            ),
            ("id,title,topic,price,quantity\n1,,t,1.00,1\n", "line 2: title is empty"),
            ("id,title,topic,price,quantity\n1,A,t,-1,1\n", "line 2: bad price \"-1\""),
            ("id,title,topic,price,quantity\n1,A,t,1.001,1\n", "line 2: bad price \"1.001\""),
            ("id,title,topic,price,quantity\n1,A,t,1.00,-1\n", "line 2: quantity \"-1\" is not a whole number"),
            ("id,title,topic,price,quantity\n0,A,t,1.00,1\n", "line 2: book id \"0\" is not a positive integer"),
            ("id,name,topic,price,quantity\n", "line 1: the header must be id,title,topic,price,quantity"),
            ("id,title,topic,price,quantity\n1,\"A\nB\",t,1.00,1\n", "line 2: title contains a control character"),
            ("id,title,topic,price,quantity\n1,\"A, \"\"B\"\"\",t,1.00,1\n\n2,C,t,x,1\n", "line 4: bad price \"x\""),
        ];
        for (text, want) in cases {
            fs::write(&file, text).unwrap();
            assert_eq!(import(&dir, &file).unwrap_err().to_string(), want, "{text:?}");
            assert_eq!((fs::read(dir.join("catalog.log")).unwrap(), fs::read(dir.join("books.csv")).unwrap()), before);
        }
        fs::write(&file, "id,title,topic,price,quantity\n10,\"A, \"\"quoted\"\"\",t,1.5,3\n4,B,u,2,0\n").unwrap();
        assert_eq!(import(&dir, &file).unwrap(), (2, catalog.seq() + 1));
        let (store, again, recent) = Store::open(&dir).unwrap();
        assert_eq!(again.iter().map(|b| b.id).collect::<Vec<_>>(), [4, 10]);
        assert_eq!(again.book(10).unwrap().title, "A, \"quoted\"");
        assert_eq!(again.seq(), catalog.seq() + 1);
        assert!(recent.journal.contains("i-1"), "the purchase journal survives an import");
        assert_eq!(super::super::store::parse(&fs::read(dir.join("books.csv")).unwrap()).unwrap().len(), 2);
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }
}
