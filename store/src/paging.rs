//! Keyset paging: every listing is ordered by id (ids are time-ordered) and a page starts after
//! the last id of the one before, so pages stay stable while rows are added and cost the same
//! however deep a client pages.

use sqlx::any::AnyRow;

/// A page of a listing and where the next one starts.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// This page's items, in id order.
    pub items: Vec<T>,
    /// The cursor of the next page (the last id here); `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Where a page starts and how long it is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keyset<'a> {
    /// The id rows must come after; empty for the first page.
    pub after: &'a str,
    limit: u32,
}

impl<'a> Keyset<'a> {
    pub fn new(cursor: Option<&'a str>, limit: u32) -> Self {
        Keyset { after: cursor.unwrap_or(""), limit }
    }

    /// How many rows to fetch: one beyond the page, which tells whether another page follows.
    pub fn fetch(&self) -> i64 {
        i64::from(self.limit) + 1
    }

    /// The rows of this page, and whether more follow.
    pub fn split(&self, mut rows: Vec<AnyRow>) -> (Vec<AnyRow>, bool) {
        let more = rows.len() > self.limit as usize;
        rows.truncate(self.limit as usize);
        (rows, more)
    }

    /// The page of `items` (this page's rows, made into records), given whether more follow.
    pub fn finish<T>(&self, items: Vec<T>, more: bool, id: impl Fn(&T) -> &str) -> Page<T> {
        let next_cursor = if more { items.last().map(|item| id(item).to_string()) } else { None };
        Page { items, next_cursor }
    }
}
