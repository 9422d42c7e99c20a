//! A statement as diesel runs it: SQL text with a `?` for each bind, prepared once per connection.
//!
//! `diesel::sql_query` marks its text as not worth keeping, so diesel prepares it anew on every
//! call: on MySQL that is a round trip of its own, on PostgreSQL a parse and a plan. A
//! [`Statement`] is kept: each connection prepares it once, and from then on a call is one
//! round trip. The texts are few (`sql.rs` makes a bounded set), so the caches stay small.
//!
//! A connection finds a prepared statement again by its `KEY`: [`BY_TEXT`] writes the SQL out
//! and looks that up; any other key names the statement, and the look-up skips the writing.
//! A key must stand for one text on any one connection. It does: each pool serves one backend,
//! whose database and table fix the text of each kind of statement.

use std::marker::PhantomData;

use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, Binary, HasSqlType, Nullable, Text};
use diesel::{QueryResult, RunQueryDsl};

/// A value bound to one `?` of a statement.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bind<'a> {
    Bytes(&'a [u8]),
    Int(Option<i64>),
    Text(&'a str),
}

/// The key of statements that connections find by their SQL text.
pub(crate) const BY_TEXT: u8 = 0;

/// The key of a statement, as diesel's statement cache sees it.
#[derive(Debug)]
pub(crate) struct Key<const KEY: u8>;

/// SQL text with a `?` where each bind goes, and its binds in order; `KEY` is how a connection
/// finds it again, `Row` the SQL type of the rows it returns (`()` when it returns none).
/// Diesel writes each `?` as the database wants it (`$1`, `$2`... on PostgreSQL).
#[derive(Debug)]
pub(crate) struct Statement<'a, const KEY: u8, Row = ()> {
    sql: &'a str,
    binds: Vec<Bind<'a>>,
    row: PhantomData<Row>,
}

impl<'a, const KEY: u8> Statement<'a, KEY> {
    /// `sql` with `binds`, one per `?` of it.
    pub(crate) fn new(sql: &'a str, binds: Vec<Bind<'a>>) -> Self {
        debug_assert_eq!(
            sql.matches('?').count(),
            binds.len(),
            "one bind per `?` of {sql}"
        );
        Statement {
            sql,
            binds,
            row: PhantomData,
        }
    }

    /// The same statement, returning rows of the SQL type `Row`.
    pub(crate) fn returning<Row>(self) -> Statement<'a, KEY, Row> {
        Statement {
            sql: self.sql,
            binds: self.binds,
            row: PhantomData,
        }
    }

    /// The statement of text `sql`, which holds this one's text before any `?` of its own
    /// (`WITH w AS (...) SELECT ...`, see `watch.rs`): this one's binds, then `extra`.
    pub(crate) fn within<'b>(&self, sql: &'b str, extra: [Bind<'b>; 2]) -> Statement<'b, BY_TEXT>
    where
        'a: 'b,
    {
        let mut binds = self.binds.clone();
        binds.extend(extra);
        Statement::new(sql, binds)
    }
}

impl<const KEY: u8, Row> Statement<'_, KEY, Row> {
    /// The SQL text, with a `?` for each bind.
    pub(crate) fn sql(&self) -> &str {
        self.sql
    }

    /// The binds, in order.
    #[cfg(test)]
    pub(crate) fn binds(&self) -> &[Bind<'_>] {
        &self.binds
    }
}

impl<DB, const KEY: u8, Row> QueryFragment<DB> for Statement<'_, KEY, Row>
where
    DB: Backend + HasSqlType<Binary> + HasSqlType<BigInt> + HasSqlType<Text>,
    [u8]: ToSql<Binary, DB>,
    Option<i64>: ToSql<Nullable<BigInt>, DB>,
    str: ToSql<Text, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        // Unlike `sql_query`, no `out.unsafe_to_cache_prepared()`: the text may be cached.
        let mut pieces = self.sql.split('?');
        out.push_sql(pieces.next().unwrap_or_default());
        for (bind, piece) in self.binds.iter().zip(pieces) {
            match bind {
                Bind::Bytes(bytes) => out.push_bind_param::<Binary, [u8]>(bytes)?,
                Bind::Int(int) => out.push_bind_param::<Nullable<BigInt>, Option<i64>>(int)?,
                Bind::Text(text) => out.push_bind_param::<Text, str>(text)?,
            }
            out.push_sql(piece);
        }
        Ok(())
    }
}

impl<const KEY: u8, Row> QueryId for Statement<'_, KEY, Row> {
    type QueryId = Key<KEY>;
    const HAS_STATIC_QUERY_ID: bool = KEY != BY_TEXT;
}

impl<const KEY: u8, Row> Query for Statement<'_, KEY, Row> {
    type SqlType = Row;
}

impl<Conn, const KEY: u8, Row> RunQueryDsl<Conn> for &Statement<'_, KEY, Row> {}
