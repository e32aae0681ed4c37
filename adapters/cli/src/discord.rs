//! Talking to Discord's REST API for `yuyo register` and `yuyo commands`: the blocking
//! client of `yuyo-blocking`, and Discord's errors in words that say what to fix.

use yuyo_blocking::prelude::*;

use crate::DiscordArgs;

/// Discord's REST API.
pub const DISCORD_API: &str = "https://discord.com/api/v10";

/// A blocking REST client authenticated with the bot token.
pub fn client(args: &DiscordArgs) -> Result<RestClient, String> {
    let token = args.token.trim();
    let token = token.strip_prefix("Bot ").unwrap_or(token);
    if token.is_empty() {
        return Err(
            "--token is empty: give the bot token (Developer Portal → Bot → \
                    Reset Token)"
                .to_owned(),
        );
    }
    let config = RestConfig::builder()
        .token(token)
        .rest_url(args.rest_url.as_str())
        .build()
        .map_err(|e| format!("bad REST settings: {e}"))?;
    RestClient::new(config, HttpSettings::default(), None)
        .map_err(|e| format!("cannot set up TLS for {}: {e}", args.rest_url))
}

/// The application's id, from `GET /applications/@me`.
pub fn application_id(client: &RestClient, args: &DiscordArgs) -> Result<u64, String> {
    let request = RestRequest::fetch_application().expect::<serde_json::Value>();
    let application = client
        .call(request)
        .and_then(|response| response.model())
        .map_err(|e| explain(&e, args, &[]))?;
    application
        .get("id")
        .and_then(serde_json::Value::as_str)
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| format!("GET /applications/@me answered no application id: {application}"))
}

/// What a failed call means and what to do about it. `urls`: the URL fields the request
/// set (field name, URL), whose validation errors are explained.
pub fn explain(error: &RestError, args: &DiscordArgs, urls: &[(&str, &str)]) -> String {
    let Some(http) = error.http() else {
        return match error {
            RestError::Transport { .. }
            | RestError::Timeout { .. }
            | RestError::RetriesExhausted { .. } => format!(
                "cannot reach Discord at {}: {error}; check the network (and --rest-url)",
                args.rest_url
            ),
            _ => error.to_string(),
        };
    };
    let status = http.status.as_u16();
    if http.is_unauthorized() {
        return format!(
            "Discord refused the token ({status} Unauthorized): give the bot token of the \
             application (Developer Portal → Bot → Reset Token) to --token"
        );
    }
    let Some(discord) = &http.discord else {
        return format!(
            "{status} from {}: {}",
            http.route,
            String::from_utf8_lossy(&http.body)
        );
    };
    let mut lines = vec![format!(
        "Discord answered {status}, code {}: {}",
        discord.code, discord.message
    )];
    for field in discord.field_errors() {
        match urls.iter().find(|(name, _)| field.path == *name) {
            Some((_, url)) => lines.push(format!(
                "Discord could not verify the URL {url}: {} ({}).\n  Discord sent it a signed \
                 PING and a PING with a bad signature: the first must be answered 200 \
                 {{\"type\":1}} (204 for event webhooks) and the second 401, each within 3 \
                 seconds, by an endpoint configured with this application's public key \
                 (Developer Portal → General Information). See what it answers with \
                 `yuyo check {url}`.",
                field.message, field.code
            )),
            _ => lines.push(format!("  {field}")),
        }
    }
    lines.join("\n")
}
