//! Keyset (cursor) pagination: a page ends with an opaque cursor naming the sort key and id of
//! its last row; the next page starts strictly after it. Rows inserted meanwhile never shift a
//! page, so nothing is skipped or shown twice, whatever the sort.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sea_orm::sea_query::{IntoCondition, SimpleExpr};
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryOrder, Select, Value};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    Asc,
    #[default]
    Desc,
}

/// What a cursor remembers: the sort it belongs to and the last row's key.
#[derive(Serialize, Deserialize)]
struct CursorData {
    /// The sort field's name.
    s: String,
    o: Order,
    /// The last row's sort value.
    v: serde_json::Value,
    id: Uuid,
}

/// A decoded cursor for the sort `field` in `order`.
pub struct Cursor {
    pub value: serde_json::Value,
    pub id: Uuid,
}

fn invalid_cursor(message: &str) -> ApiError {
    ApiError::BadRequest {
        code: "invalid_cursor",
        message: format!("{message}: pass back the next_cursor of the previous page, with the same sort and order"),
    }
}

/// Encodes the cursor after a row whose sort key is `value`.
pub fn encode(field: &str, order: Order, value: serde_json::Value, id: Uuid) -> String {
    let data = CursorData {
        s: field.to_owned(),
        o: order,
        v: value,
        id,
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&data).unwrap_or_default())
}

/// Decodes a cursor, refusing one made for another sort or order.
pub fn decode(cursor: &str, field: &str, order: Order) -> Result<Cursor, ApiError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor.trim())
        .map_err(|_| invalid_cursor("the cursor is not one this API issued"))?;
    let data: CursorData = serde_json::from_slice(&bytes)
        .map_err(|_| invalid_cursor("the cursor is not one this API issued"))?;
    if data.s != field || data.o != order {
        return Err(invalid_cursor(
            "the cursor belongs to another sort or order",
        ));
    }
    Ok(Cursor {
        value: data.v,
        id: data.id,
    })
}

/// Rows a page holds unless the client asks otherwise, and at most.
pub const DEFAULT_PAGE: u64 = 50;
pub const MAX_PAGE: u64 = 200;

/// The page size a `limit` query parameter asks for.
pub fn page_size(limit: Option<u64>) -> Result<u64, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::BadRequest {
            code: "invalid_query",
            message: format!("limit must be between 1 and {MAX_PAGE}, got {limit}"),
        })
    }
}

/// Ends a page fetched with `limit + 1` rows: drops the extra row and, when there was one,
/// returns the cursor after the last row kept.
pub fn finish_page<T>(
    rows: &mut Vec<T>,
    limit: u64,
    cursor_after: impl Fn(&T) -> String,
) -> Option<String> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() <= limit {
        return None;
    }
    rows.truncate(limit);
    rows.last().map(cursor_after)
}

/// Restricts `select` to the rows after (`column`, `id_column`) = (`value`, `id`) in `order`,
/// and orders it that way.
pub fn after<E, C>(
    select: Select<E>,
    column: C,
    id_column: C,
    order: Order,
    after: Option<(Value, Uuid)>,
) -> Select<E>
where
    E: EntityTrait,
    C: ColumnTrait,
{
    let select = match order {
        Order::Asc => select.order_by_asc(column).order_by_asc(id_column),
        Order::Desc => select.order_by_desc(column).order_by_desc(id_column),
    };
    let Some((value, id)) = after else {
        return select;
    };
    let (past, past_id): (SimpleExpr, SimpleExpr) = match order {
        Order::Asc => (column.gt(value.clone()), id_column.gt(id)),
        Order::Desc => (column.lt(value.clone()), id_column.lt(id)),
    };
    let condition = Condition::any().add(past).add(
        Condition::all()
            .add(column.eq(value))
            .add(past_id)
            .into_condition(),
    );
    sea_orm::QueryFilter::filter(select, condition)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_refuses_another_sort_or_garbage() {
        let id = Uuid::now_v7();
        let cursor = encode("priority", Order::Asc, serde_json::json!(7), id);
        let decoded = decode(&cursor, "priority", Order::Asc).expect("decodes");
        assert_eq!(decoded.value, serde_json::json!(7));
        assert_eq!(decoded.id, id);
        assert!(decode(&cursor, "name", Order::Asc).is_err());
        assert!(decode(&cursor, "priority", Order::Desc).is_err());
        assert!(decode("%%%", "priority", Order::Asc).is_err());
        assert!(decode("e30", "priority", Order::Asc).is_err());
    }
}
