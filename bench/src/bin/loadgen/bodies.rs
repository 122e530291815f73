//! Event bodies: unique, freshly signed Stripe events of the requested size.

use bytes::Bytes;
use serde_json::json;

/// Unique `checkout.session.completed` bodies made from one template. The unique parts
/// (event, session and payment intent ids, email, order reference, phone) are fixed-width
/// slots, so an event costs one copy of the template and a few digit writes, and the
/// generator stays cheap next to the services it measures.
#[derive(Debug)]
pub(crate) struct Bodies {
    pub(crate) template: Vec<u8>,
    /// Offsets of the 12-digit event number in every unique id.
    pub(crate) number_slots: Vec<usize>,
    /// Offset of the 10 national digits of the phone number.
    pub(crate) phone_slot: usize,
    /// Where this run's phone numbers start (see [`Bodies::new`]).
    phone_base: u64,
}

pub(crate) const NUMBER_MARK: &str = "############";
pub(crate) const PHONE_MARK: &str = "%%%%%%%%%%";
/// Phone numbers a run may use: area codes 200-999, seven digits each.
const PHONE_NUMBERS: u64 = 800 * 10_000_000;
/// How much further the numbers of a run started a second later begin.
const PHONE_BLOCK: u64 = 1_000_000;

impl Bodies {
    /// Bodies of `size` bytes (or the smallest event, when `size` is below it) whose ids
    /// start with `run`, created at `created` (Unix seconds, the run's start), so runs
    /// against one Redis never collide. Phone numbers have no room for the run's id, so
    /// the start second picks the first one: a run starting a second later starts a
    /// million numbers further. Runs started at least a second apart therefore share
    /// none, unless one sent over a million events per second between their starts, or
    /// they started 8,000 s or more apart (the numbers wrap). A shared phone would make
    /// the later run's events find an earlier run's contacts: conflicts and updates
    /// instead of the new contacts the load is meant to be.
    pub(crate) fn new(run: &str, size: usize, created: i64) -> Self {
        let token = format!("{run}{NUMBER_MARK}");
        let render = |notes: &str| {
            // Field order and shapes follow a real Stripe delivery (API 2025-03-31.basil).
            json!({
                "id": format!("evt_{token}"),
                "object": "event",
                "api_version": "2025-03-31.basil",
                "created": created,
                "data": {"object": {
                    "id": format!("cs_test_{token}"),
                    "object": "checkout.session",
                    "amount_subtotal": 4900,
                    "amount_total": 4900,
                    "currency": "usd",
                    "customer": null,
                    "customer_details": {
                        "address": {"city": "Portland", "country": "US", "line1": "1 Example St",
                                    "postal_code": "97201", "state": "OR"},
                        "email": format!("buyer.{token}@example.com"),
                        "name": "Jenny Rosen",
                        "phone": format!("+1{PHONE_MARK}"),
                        "tax_exempt": "none"
                    },
                    "customer_email": null,
                    "livemode": false,
                    "metadata": {"order_ref": format!("ord_{token}"), "notes": notes},
                    "mode": "payment",
                    "payment_intent": format!("pi_{token}"),
                    "payment_status": "paid",
                    "status": "complete"
                }},
                "livemode": false,
                "pending_webhooks": 1,
                "request": {"id": null, "idempotency_key": null},
                "type": "checkout.session.completed"
            })
            .to_string()
        };
        let smallest = render("").len();
        let filler = "Gift wrap, deliver after 5pm, leave with the concierge. ";
        let notes: String = filler
            .chars()
            .cycle()
            .take(size.saturating_sub(smallest))
            .collect();
        let template = render(&notes).into_bytes();
        let find_all = |mark: &str| -> Vec<usize> {
            let mark = mark.as_bytes();
            template
                .windows(mark.len())
                .enumerate()
                .filter(|(_, w)| *w == mark)
                .map(|(i, _)| i)
                .collect()
        };
        let number_slots = find_all(NUMBER_MARK);
        let phone_slot = find_all(PHONE_MARK).first().copied().unwrap_or(0);
        Self {
            template,
            number_slots,
            phone_slot,
            phone_base: created.unsigned_abs() % (PHONE_NUMBERS / PHONE_BLOCK) * PHONE_BLOCK,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.template.len()
    }

    /// Event number `n`: every id, the email and the phone number are unique to `n`.
    pub(crate) fn event(&self, n: u64) -> Bytes {
        let mut body = self.template.clone();
        for &at in &self.number_slots {
            write_digits(&mut body[at..at + NUMBER_MARK.len()], n);
        }
        // A NANP number: area code 200-999, then seven digits.
        let m = (self.phone_base + n) % PHONE_NUMBERS;
        let national = (200 + m / 10_000_000) * 10_000_000 + m % 10_000_000;
        write_digits(
            &mut body[self.phone_slot..self.phone_slot + PHONE_MARK.len()],
            national,
        );
        Bytes::from(body)
    }
}

/// Writes `n` zero-padded into `out` (its low digits when `n` is wider).
pub(crate) fn write_digits(out: &mut [u8], mut n: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}
