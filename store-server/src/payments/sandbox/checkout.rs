//! The hosted checkout page a player pays on: the page, the test cards, and the charge.

use super::*;

pub(super) fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

pub(super) fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title}</title><style>\
         body{{font-family:system-ui,sans-serif;background:#f4f1ea;margin:0;display:flex;justify-content:center}}\
         main{{background:#fff;margin:3rem 1rem;padding:2rem;border-radius:12px;box-shadow:0 2px 12px #0002;max-width:26rem;width:100%}}\
         h1{{font-size:1.2rem;margin:0 0 1rem}} .amount{{font-size:2rem;font-weight:700;margin:.5rem 0 1.5rem}}\
         label{{display:block;font-size:.9rem;margin-bottom:.3rem}} input{{width:100%;box-sizing:border-box;font-size:1.1rem;padding:.6rem;border:1px solid #bbb;border-radius:6px}}\
         button{{margin-top:1rem;width:100%;padding:.8rem;font-size:1.1rem;border:0;border-radius:6px;background:#2d6a4f;color:#fff;cursor:pointer}}\
         .muted{{color:#666;font-size:.85rem}} .ok{{color:#2d6a4f}} .bad{{color:#a4161a}}\
         .test{{display:block;background:#c1121f;color:#fff;font-weight:700;letter-spacing:.05em;text-align:center;padding:.4rem;border-radius:6px;margin:0 0 1rem}}\
         </style></head><body><main><strong class=\"test\" id=\"test-mode\">TEST MODE</strong>{body}<p class=\"muted\">Coinslot sandbox: no real money moves; pay with a test card (4242 4242 4242 4242).</p></main></body></html>"
    ))
}

/// The hosted checkout page: the merchant, what is bought, the amount, and a card form.
#[utoipa::path(
    get, path = "/sandbox/checkout/{session}", tag = "sandbox",
    params(("session" = String, Path, description = "Checkout session id")),
    responses((status = 200, content_type = "text/html", body = String), (status = 404, content_type = "text/html", body = String))
)]
pub(super) async fn checkout_page(
    State(sandbox): State<Sandbox>,
    Path(session_id): Path<String>,
) -> ApiResult<Response> {
    let mut conn = sandbox.0.db.pool().acquire().await?;
    let Some(session) = find_session(&mut conn, &session_id).await? else {
        return Ok((StatusCode::NOT_FOUND, page("Not found", "<h1>This checkout does not exist.</h1>"))
            .into_response());
    };
    let closed = session.status != "open" || session.expires_at_s <= now_micros() / 1_000_000;
    let form = if closed {
        format!(
            "<p class=\"bad\" id=\"status\">This checkout is closed ({}).</p>",
            escape_html(&session.status)
        )
    } else {
        format!(
            "<form method=\"post\" action=\"{}/checkout/{}/pay\"><label for=\"card_number\">Card number</label>\
             <input id=\"card_number\" name=\"card_number\" inputmode=\"numeric\" autocomplete=\"cc-number\" placeholder=\"4242 4242 4242 4242\" required>\
             <button id=\"pay\" type=\"submit\">Pay {}</button></form>\
             <p class=\"muted\">Test cards: 4242 4242 4242 4242 succeeds, 4000 0000 0000 0002 is declined.</p>",
            escape_html(&sandbox.0.public_url),
            escape_html(&session.id),
            escape_html(&session.amount.to_string())
        )
    };
    let body = format!(
        "<h1>{}</h1><p id=\"description\">{}</p><p class=\"amount\" id=\"amount\">{}</p>{form}",
        escape_html(&session.merchant),
        escape_html(&session.description),
        escape_html(&session.amount.to_string())
    );
    Ok(page("Checkout", &body).into_response())
}

pub(super) fn luhn_ok(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(index, byte)| {
            let digit = u32::from(byte - b'0');
            if index % 2 == 1 { if digit * 2 > 9 { digit * 2 - 9 } else { digit * 2 } } else { digit }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Pays a checkout session with a test card: from the page's form, or as JSON `{card_number}`
/// (the in-game checkout).
#[utoipa::path(
    post, path = "/sandbox/checkout/{session}/pay", tag = "sandbox",
    params(("session" = String, Path, description = "Checkout session id")),
    request_body(content = PayRequest, content_type = "application/json"),
    responses(
        (status = 200, body = PayResult, description = "succeeded, card_declined or insufficient_funds"),
        (status = 400, body = store_api::ErrorBody, description = "not a card number"),
        (status = 404, body = store_api::ErrorBody),
        (status = 409, body = store_api::ErrorBody, description = "the checkout is closed"),
    )
)]
pub(super) async fn pay(
    State(sandbox): State<Sandbox>,
    Path(session_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
    let card_number = if is_form {
        let fields: Vec<(String, String)> = serde_urlencoded_form(&body)
            .map_err(|_| ApiError::invalid("card_number", "the form is malformed"))?;
        fields.into_iter().find(|(name, _)| name == "card_number").map(|(_, value)| value).unwrap_or_default()
    } else {
        let request: PayRequest = parse_json(&body)?;
        request.card_number
    };
    let digits: String = card_number.chars().filter(|c| !c.is_whitespace()).collect();
    if digits.len() != 16 || !digits.bytes().all(|b| b.is_ascii_digit()) || !luhn_ok(&digits) {
        return Err(ApiError::invalid(
            "card_number",
            "the card number must be 16 digits that pass the Luhn check",
        ));
    }
    let outcome = charge(&sandbox, &session_id, &digits).await?;
    if is_form {
        let (class, text, status) = match outcome.status {
            PayStatus::Succeeded => ("ok", "Payment succeeded. You can return to the game.", "succeeded"),
            PayStatus::InsufficientFunds => ("bad", "The card has insufficient funds.", "insufficient_funds"),
            PayStatus::CardDeclined | PayStatus::Other => ("bad", "The card was declined.", "card_declined"),
        };
        return Ok(page(
            "Checkout",
            &format!("<h1>{}</h1><p class=\"{class}\" id=\"status\">{text}</p>", escape_html(status)),
        )
        .into_response());
    }
    Ok(axum::Json(outcome).into_response())
}

pub(super) fn serde_urlencoded_form(body: &[u8]) -> Result<Vec<(String, String)>, ()> {
    let text = std::str::from_utf8(body).map_err(|_| ())?;
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode_form_part(name)?, decode_form_part(value)?))
        })
        .collect()
}

pub(super) fn decode_form_part(part: &str) -> Result<String, ()> {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(index + 1..index + 3).ok_or(())?;
                out.push(u8::from_str_radix(std::str::from_utf8(hex).map_err(|_| ())?, 16).map_err(|_| ())?);
                index += 2;
            }
            byte => out.push(byte),
        }
        index += 1;
    }
    String::from_utf8(out).map_err(|_| ())
}

pub(super) async fn charge(sandbox: &Sandbox, session_id: &str, card: &str) -> ApiResult<PayResult> {
    let mut tx = sandbox.0.db.begin_write().await?;
    let session =
        find_session(&mut tx, session_id).await?.ok_or_else(|| ApiError::not_found("session", session_id))?;
    if session.status != "open" || session.expires_at_s <= now_micros() / 1_000_000 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::OrderStateConflict,
            "this checkout is closed",
        )
        .with_detail("status", session.status));
    }
    let failure = match card {
        cards::DECLINED => Some((PayStatus::CardDeclined, "card_declined")),
        cards::INSUFFICIENT_FUNDS => Some((PayStatus::InsufficientFunds, "insufficient_funds")),
        _ => None,
    };
    let result = if let Some((status, reason)) = failure {
        close_session(&mut tx, &session.id, "failed", None).await?;
        let data =
            serde_json::json!({ "session_id": session.id, "reference": session.reference, "reason": reason });
        emit(sandbox, &mut tx, "payment.failed", data, Duration::ZERO).await?;
        PayResult { status, payment_id: None }
    } else {
        // One transaction: if the session was closed meanwhile, the payment is rolled back too.
        let payment_id =
            record_payment(sandbox, &mut tx, &session, session.amount, &session.reference, &card[12..])
                .await?;
        close_session(&mut tx, &session.id, "paid", Some(&payment_id)).await?;
        if card == cards::DISPUTED {
            let data = serde_json::json!({ "payment_id": payment_id, "reference": session.reference, "amount": session.amount });
            emit(sandbox, &mut tx, "payment.disputed", data, sandbox.0.dispute_delay).await?;
        }
        PayResult { status: PayStatus::Succeeded, payment_id: Some(payment_id) }
    };
    tx.commit().await?;
    Ok(result)
}
