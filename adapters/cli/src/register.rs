//! `yuyo register`: sets the application's interactions endpoint URL (and event webhooks
//! URL) through `PATCH /applications/@me`, which makes Discord validate it.

use std::process::ExitCode;

use yuyo_blocking::prelude::*;

use crate::{RegisterArgs, discord};

/// `event_webhooks_status`: enabled.
const EVENTS_ENABLED: u8 = 2;

/// Runs `yuyo register`: prints Discord's verdict; fails when Discord refused the URL.
pub fn run(args: &RegisterArgs) -> Result<ExitCode, String> {
    for url in std::iter::once(&args.url).chain(args.events_url.as_ref()) {
        if !url.to_ascii_lowercase().starts_with("https://")
            && args.discord.rest_url == discord::DISCORD_API
        {
            println!(
                "note: {url} is not https://; Discord accepts only https URLs (serve behind a \
                 TLS proxy or with TLS)"
            );
        }
    }
    let client = discord::client(&args.discord)?;
    let update = ApplicationUpdate {
        interactions_endpoint_url: Some(args.url.clone()),
        event_webhooks_url: args.events_url.clone(),
        event_webhooks_status: args.events_url.as_ref().map(|_| EVENTS_ENABLED),
        event_webhooks_types: (!args.event_types.is_empty()).then(|| args.event_types.clone()),
    };
    println!("asking Discord to verify and save {}", args.url);
    if let Some(events) = &args.events_url {
        println!("and the event webhooks URL {events}");
    }
    let request = RestRequest::update_application(&update)
        .map_err(|e| format!("cannot encode the request: {e}"))?
        .expect::<serde_json::Value>();
    match client.call(request).and_then(|response| response.model()) {
        Ok(application) => {
            let field = |name: &str| {
                application
                    .get(name)
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("(not shown)")
                    .to_owned()
            };
            println!(
                "OK: Discord verified the URL; application {} ({}) now sends interactions to {}",
                field("name"),
                field("id"),
                field("interactions_endpoint_url")
            );
            if args.events_url.is_some() {
                println!(
                    "OK: event webhooks (enabled) go to {}",
                    field("event_webhooks_url")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            let mut urls = vec![("interactions_endpoint_url", args.url.as_str())];
            if let Some(events) = &args.events_url {
                urls.push(("event_webhooks_url", events.as_str()));
            }
            println!("FAIL  {}", discord::explain(&error, &args.discord, &urls));
            Ok(ExitCode::FAILURE)
        }
    }
}
