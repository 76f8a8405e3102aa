//! `webhooks subscribe|list|delete|dead-letters`: webhook subscriptions to the agent's
//! events, over its `/v1/webhooks` and `/v1/dead-letters` routes.

use reqwest::Method;
use serde_json::json;

use super::client::Client;
use super::exit;
use super::output::{self, OutputFormat, or_dash, outln};
use crate::settings::{Settings, env};
use crate::subscriptions::{DeadLetterPage, SubscriptionList, SubscriptionView, Unsubscribed};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: WebhooksCommand,
    #[arg(long, short, value_enum, default_value_t, global = true)]
    output: OutputFormat,
}

#[derive(Debug, clap::Subcommand)]
enum WebhooksCommand {
    /// Deliver events of the kinds named to URL as signed JSON POSTs, from the next event on.
    Subscribe {
        /// Where deliveries go; under one of the trust policy's `allowed_notification_urls`.
        url: String,
        /// Event kinds, comma-separated: `run.*`, `rollout.*`, `health.*`, `hold.*`, an
        /// exact kind such as `rollout.finished`, or `*` for every event.
        #[arg(long, value_delimiter = ',', required = true, value_name = "KINDS")]
        events: Vec<String>,
        /// The HMAC-SHA256 key deliveries are signed with (at least 16 characters). A flag's
        /// value is visible to every user in `ps`: prefer the environment variable
        #[arg(long, env = env::SUBSCRIPTION_SECRET, hide_env_values = true, value_name = "SECRET")]
        secret: String,
    },
    /// The subscriptions: URL, event kinds, the last event delivered, dead letters.
    List,
    /// Delete a subscription: nothing more is delivered to it.
    Delete { id: String },
    /// Deliveries given up on after their last try, newest first.
    DeadLetters {
        /// Only this subscription's (all, notification channels' included, when not given).
        #[arg(long, value_name = "ID")]
        subscription: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

pub fn run(settings: &Settings, args: Args) -> anyhow::Result<u8> {
    let client = Client::new(settings)?;
    let json = matches!(args.output, OutputFormat::Json);
    match args.command {
        WebhooksCommand::Subscribe {
            url,
            events,
            secret,
        } => {
            let view: SubscriptionView = client.send_json(
                Method::POST,
                "/v1/webhooks/subscribe",
                &json!({ "url": url, "events": events, "secret": secret }),
            )?;
            if json {
                output::print_json(&view);
            } else {
                outln!("subscribed {} to {}", view.url, view.events.join(", "));
                outln!("id {}", view.id);
            }
        }
        WebhooksCommand::List => {
            let list: SubscriptionList = client.get("/v1/webhooks")?;
            if json {
                output::print_json(&list.subscriptions);
            } else {
                let rows: Vec<Vec<String>> = list
                    .subscriptions
                    .iter()
                    .map(|s| {
                        vec![
                            s.id.clone(),
                            s.url.clone(),
                            s.events.join(","),
                            s.cursor.to_string(),
                            s.dead_letters.to_string(),
                            s.created_at.to_string(),
                        ]
                    })
                    .collect();
                output::table(&["ID", "URL", "EVENTS", "CURSOR", "DEAD", "CREATED"], &rows);
            }
        }
        WebhooksCommand::Delete { id } => {
            let done: Unsubscribed = client.send(Method::DELETE, &format!("/v1/webhooks/{id}"))?;
            if json {
                output::print_json(&done);
            } else {
                outln!("deleted {}", done.id);
            }
        }
        WebhooksCommand::DeadLetters {
            subscription,
            limit,
        } => {
            let mut path = format!("/v1/dead-letters?limit={limit}");
            if let Some(s) = &subscription {
                path.push_str(&format!("&subscription={s}"));
            }
            let page: DeadLetterPage = client.get(&path)?;
            if json {
                output::print_json(&page.dead_letters);
            } else {
                let rows: Vec<Vec<String>> = page
                    .dead_letters
                    .iter()
                    .map(|d| {
                        vec![
                            d.failed_at.to_string(),
                            or_dash(d.subscription_id.as_ref()),
                            d.delivery_id.clone(),
                            d.kind.clone(),
                            d.attempts.to_string(),
                            d.error.clone(),
                        ]
                    })
                    .collect();
                output::table(
                    &[
                        "FAILED",
                        "SUBSCRIPTION",
                        "DELIVERY",
                        "KIND",
                        "TRIES",
                        "ERROR",
                    ],
                    &rows,
                );
            }
        }
    }
    Ok(exit::OK)
}
