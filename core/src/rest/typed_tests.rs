//! Unit tests of the typed requests (interactions, messages, commands) and
//! of Discord's error JSON.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use proptest::prelude::*;
use serde_json::{Value, json};
use twilight_model::application::command::{
    Command, CommandOption, CommandOptionType, CommandType,
};
use twilight_model::channel::message::component::{ActionRow, Button, ButtonStyle};
use twilight_model::channel::message::{AllowedMentions, Component, Embed, MessageFlags};
use twilight_model::http::interaction::{InteractionResponse, InteractionResponseType};
use twilight_model::id::Id;

use super::tests::{at, reply};
use super::*;
use crate::multipart::{FileData, FileSource, Segment};

const ITOKEN: &str = "aW50ZXJhY3Rpb24/c2VjcmV0+dG9rZW4=";
const ENCODED: &str = "aW50ZXJhY3Rpb24%2Fc2VjcmV0%2BdG9rZW4%3D";

fn interaction() -> Interaction {
    Interaction::new(Id::new(42), Id::new(7), ITOKEN)
}

/// Method, path, template; and that the route is a token route: no
/// `Authorization`, outside the global limit, major = id + token digest,
/// and no token in `Debug`.
fn check_token_route<T>(
    request: &RestRequest<T>,
    method: Method,
    path: &str,
    template: &str,
    id: u64,
) {
    let route = request.route();
    assert_eq!(route.method(), method);
    assert_eq!(route.path(), path);
    assert_eq!(route.key().template(), template);
    assert!(!route.is_authenticated());
    assert!(!route.is_global_limited());
    assert!(matches!(route.major(), Major::IdToken(major, _) if major == id));
    let key = route.rate_limit_key();
    assert!(!key.global);
    let debug = format!("{request:?} {key:?}");
    assert!(
        !debug.contains(ITOKEN) && !debug.contains(ENCODED),
        "{debug}"
    );
}

fn json_of<T>(request: &RestRequest<T>) -> Value {
    let RequestBody::Json(json) = request.body() else {
        panic!("expected a JSON body, got {:?}", request.body());
    };
    serde_json::from_slice(json).unwrap()
}

/// The `payload_json` and file parts of a multipart body, via `multer`.
fn multipart_of<T>(request: &RestRequest<T>) -> (Value, Vec<(String, String, Bytes)>) {
    let RequestBody::Multipart(body) = request.body() else {
        panic!("expected multipart, got {:?}", request.body());
    };
    let bytes = body.to_bytes().expect("in-memory files only");
    let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(bytes) });
    let mut multipart = multer::Multipart::new(stream, body.boundary());
    futures::executor::block_on(async {
        let mut json = Value::Null;
        let mut files = Vec::new();
        while let Some(field) = multipart.next_field().await.unwrap() {
            let name = field.name().unwrap().to_owned();
            let filename = field.file_name().map(str::to_owned);
            let data = field.bytes().await.unwrap();
            match filename {
                None => {
                    assert_eq!(name, "payload_json");
                    json = serde_json::from_slice(&data).unwrap();
                }
                Some(filename) => files.push((name, filename, data)),
            }
        }
        (json, files)
    })
}

fn button(custom_id: &str) -> Component {
    Component::ActionRow(ActionRow {
        id: None,
        components: vec![Component::Button(Button {
            id: None,
            custom_id: Some(custom_id.to_owned()),
            disabled: false,
            emoji: None,
            label: Some("Go".to_owned()),
            style: ButtonStyle::Primary,
            url: None,
            sku_id: None,
        })],
    })
}

fn embed(title: &str) -> Embed {
    Embed {
        author: None,
        color: None,
        description: None,
        fields: Vec::new(),
        footer: None,
        image: None,
        kind: "rich".to_owned(),
        provider: None,
        thumbnail: None,
        timestamp: None,
        title: Some(title.to_owned()),
        url: None,
        video: None,
    }
}

#[test]
fn respond_sends_a_typed_response() {
    let response = InteractionResponse {
        kind: InteractionResponseType::DeferredUpdateMessage,
        data: None,
    };
    let request = interaction().respond(response).unwrap();
    let path = format!("/interactions/42/{ENCODED}/callback");
    let template = "/interactions/{interaction_id}/{interaction_token}/callback";
    check_token_route(&request, Method::POST, &path, template, 42);
    assert_eq!(json_of(&request), json!({"type": 6}));
}

#[test]
fn defer_and_callback_kinds() {
    let i = interaction();
    assert_eq!(
        json_of(&i.defer(true)),
        json!({"type": 5, "data": {"flags": 64}})
    );
    assert_eq!(json_of(&i.defer(false)), json!({"type": 5}));
    assert_eq!(json_of(&i.defer_update()), json!({"type": 6}));
    let same = |callback: Callback| json_of(&i.respond(callback).unwrap());
    assert_eq!(
        same(Callback::deferred_ephemeral()),
        json!({"type": 5, "data": {"flags": 64}})
    );
    assert_eq!(same(Callback::deferred()), json!({"type": 5}));
    assert_eq!(
        same(Callback::update_message(MessageCreate::new().content("x"))),
        json!({"type": 7, "data": {"content": "x"}})
    );
    let modal = same(Callback::modal("form", "Title", vec![]));
    assert_eq!(modal["type"], 9);
    assert_eq!(modal["data"]["custom_id"], "form");
    let choices = same(Callback::autocomplete(vec![]));
    assert_eq!(choices, json!({"type": 8, "data": {"choices": []}}));
    check_token_route(
        &i.defer(true),
        Method::POST,
        &format!("/interactions/42/{ENCODED}/callback"),
        "/interactions/{interaction_id}/{interaction_token}/callback",
        42,
    );
}

#[test]
fn respond_with_message_holds_everything() {
    let mentions = AllowedMentions {
        users: vec![Id::new(5)],
        ..AllowedMentions::default()
    };
    let message = MessageCreate::new()
        .content("hi")
        .embed(embed("E"))
        .component(button("b"))
        .allowed_mentions(mentions)
        .ephemeral()
        .flags(MessageFlags::SUPPRESS_NOTIFICATIONS)
        .tts(true);
    let request = interaction().respond_with_message(message).unwrap();
    let json = json_of(&request);
    assert_eq!(json["type"], 4);
    let data = &json["data"];
    assert_eq!(data["content"], "hi");
    assert_eq!(data["embeds"][0]["title"], "E");
    assert_eq!(data["components"][0]["type"], 1);
    assert_eq!(data["components"][0]["components"][0]["custom_id"], "b");
    assert_eq!(
        data["allowed_mentions"],
        json!({"parse": [], "users": ["5"]})
    );
    assert_eq!(data["flags"], (1 << 6) | (1 << 12));
    assert_eq!(data["tts"], true);
    assert!(data.get("attachments").is_none());
    assert!(data.get("poll").is_none());
}

#[test]
fn respond_with_files_is_multipart() {
    let message = MessageCreate::new()
        .content("files")
        .attachment(Attachment::from_bytes("a.txt", "alpha").description("first"))
        .attachment(
            Attachment::from_bytes("b.bin", Bytes::from_static(b"\0\x01"))
                .filename("renamed.png")
                .content_type("image/png"),
        );
    let request = interaction().respond_with_message(message).unwrap();
    let (json, files) = multipart_of(&request);
    assert_eq!(json["type"], 4);
    assert_eq!(
        json["data"]["attachments"],
        json!([
            {"id": 0, "filename": "a.txt", "description": "first"},
            {"id": 1, "filename": "renamed.png"},
        ])
    );
    assert_eq!(files.len(), 2);
    assert_eq!(files[0].0, "files[0]");
    assert_eq!(files[0].1, "a.txt");
    assert_eq!(files[0].2, "alpha");
    assert_eq!(files[1].0, "files[1]");
    assert_eq!(files[1].1, "renamed.png");
    assert_eq!(files[1].2, Bytes::from_static(b"\0\x01"));
    let RequestBody::Multipart(body) = request.body() else {
        unreachable!()
    };
    let text = String::from_utf8_lossy(&body.to_bytes().unwrap()).into_owned();
    assert!(text.contains("Content-Type: image/png\r\n"));
    assert!(!format!("{request:?}").contains(ITOKEN));
}

#[test]
fn files_from_disk_are_streamed_by_the_driver() {
    let attachment = Attachment::from_path("/var/data/chart.png").content_type("image/png");
    assert_eq!(attachment.name(), "chart.png");
    let sized = Attachment::from_source(
        "sized.bin",
        FileSource::Path {
            path: "/var/data/x".into(),
            len: Some(3),
        },
    );
    let request = interaction()
        .followup(
            MessageCreate::new()
                .attachment(attachment)
                .attachment(sized),
        )
        .unwrap();
    let RequestBody::Multipart(body) = request.body() else {
        panic!("expected multipart")
    };
    let files: Vec<_> = body
        .segments()
        .iter()
        .filter_map(|segment| match segment {
            Segment::File { index, source } => Some((*index, source.clone())),
            Segment::Bytes(_) => None,
        })
        .collect();
    assert_eq!(
        files,
        vec![
            (
                0,
                FileSource::Path {
                    path: "/var/data/chart.png".into(),
                    len: None
                }
            ),
            (
                1,
                FileSource::Path {
                    path: "/var/data/x".into(),
                    len: Some(3)
                }
            ),
        ]
    );
    assert_eq!(body.content_length(), None);
    assert!(body.to_bytes().is_none());
    assert_eq!(Attachment::from_path("/").name(), "file");
    let part = crate::multipart::FilePart::memory("m.txt", "m").with_content_type("text/plain");
    let converted = Attachment::from(part);
    assert_eq!(converted.name(), "m.txt");
    assert_eq!(
        converted.data(),
        &FileData::Memory(Bytes::from_static(b"m"))
    );
}

#[test]
fn original_response_routes() {
    let i = interaction();
    let path = format!("/webhooks/7/{ENCODED}/messages/@original");
    let template = "/webhooks/{webhook_id}/{webhook_token}/messages/@original";
    check_token_route(&i.original(), Method::GET, &path, template, 7);
    assert_eq!(i.original().body(), &RequestBody::Empty);
    check_token_route(&i.delete_original(), Method::DELETE, &path, template, 7);
    let edit = i
        .edit_original(MessageEdit::new().content("done").clear_components())
        .unwrap();
    check_token_route(&edit, Method::PATCH, &path, template, 7);
    assert_eq!(json_of(&edit), json!({"content": "done", "components": []}));
}

#[test]
fn followup_routes() {
    let i = interaction();
    let create = i.followup(MessageCreate::new().content("more")).unwrap();
    check_token_route(
        &create,
        Method::POST,
        &format!("/webhooks/7/{ENCODED}?wait=true"),
        "/webhooks/{webhook_id}/{webhook_token}",
        7,
    );
    assert_eq!(json_of(&create), json!({"content": "more"}));
    let path = format!("/webhooks/7/{ENCODED}/messages/9");
    let template = "/webhooks/{webhook_id}/{webhook_token}/messages/{id}";
    check_token_route(
        &i.followup_message(Id::new(9)),
        Method::GET,
        &path,
        template,
        7,
    );
    check_token_route(
        &i.delete_followup(Id::new(9)),
        Method::DELETE,
        &path,
        template,
        7,
    );
    let edit = i
        .edit_followup(Id::new(9), MessageEdit::new().clear_content())
        .unwrap();
    check_token_route(&edit, Method::PATCH, &path, template, 7);
    assert_eq!(json_of(&edit), json!({"content": null}));
}

#[test]
#[allow(deprecated)] // the typed routes must equal the raw ones
fn typed_routes_match_the_existing_constructors() {
    let i = interaction();
    let old =
        RestRequest::<twilight_model::channel::Message>::get_original_response(Id::new(7), ITOKEN);
    assert_eq!(i.original().route(), old.route());
    let old = RestRequest::create_followup(Id::new(7), ITOKEN, Payload::raw_json("{}"));
    assert_eq!(
        i.followup(MessageCreate::new()).unwrap().route(),
        old.route()
    );
}

#[test]
fn message_edit_attachments() {
    let edit = MessageEdit::new()
        .keep_attachment(Id::new(111))
        .attachment(Attachment::from_bytes("new.txt", "n"));
    let request = interaction().edit_original(edit).unwrap();
    let (json, files) = multipart_of(&request);
    assert_eq!(
        json,
        json!({"attachments": [{"id": 111}, {"id": 0, "filename": "new.txt"}]})
    );
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].0, "files[0]");
    let cleared = MessageEdit::new().clear_attachments().clear_embeds();
    assert_eq!(
        serde_json::from_slice::<Value>(cleared.into_payload().unwrap().json_bytes()).unwrap(),
        json!({"attachments": [], "embeds": []})
    );
    let nothing = MessageEdit::new().into_payload().unwrap();
    assert_eq!(nothing.json_bytes(), "{}");
    let full = MessageEdit::new()
        .embeds([embed("a"), embed("b")])
        .components([button("x")])
        .allowed_mentions(AllowedMentions::default())
        .flags(MessageFlags::SUPPRESS_EMBEDS);
    let json: Value = serde_json::from_slice(full.into_payload().unwrap().json_bytes()).unwrap();
    assert_eq!(json["embeds"].as_array().unwrap().len(), 2);
    assert_eq!(json["flags"], 4);
    assert_eq!(json["allowed_mentions"], json!({"parse": []}));
}

#[test]
fn unserialisable_models_are_errors_not_panics() {
    use twilight_model::channel::message::component::{SelectMenu, SelectMenuType};
    let menu = Component::SelectMenu(SelectMenu {
        id: None,
        channel_types: None,
        custom_id: "m".to_owned(),
        default_values: None,
        disabled: false,
        kind: SelectMenuType::Text,
        max_values: None,
        min_values: None,
        options: None,
        placeholder: None,
        required: None,
    });
    let i = interaction();
    assert!(
        i.respond_with_message(MessageCreate::new().component(menu.clone()))
            .is_err()
    );
    assert!(
        i.edit_original(MessageEdit::new().component(menu.clone()))
            .is_err()
    );
    assert!(i.followup(MessageCreate::new().component(menu)).is_err());
}

#[test]
fn interaction_debug_redacts_the_token() {
    let debug = format!("{:?}", interaction());
    assert!(debug.contains("<redacted>"));
    assert!(!debug.contains(ITOKEN));
    let requests = [
        format!("{:?}", interaction().defer(true)),
        format!("{:?}", interaction().original()),
        format!(
            "{:?}",
            interaction().respond_returning(Callback::deferred())
        ),
        format!("{:?}", interaction().delete_followup(Id::new(1))),
    ];
    for debug in requests {
        assert!(
            !debug.contains(ITOKEN) && !debug.contains(ENCODED),
            "{debug}"
        );
    }
}

fn message_json(id: u64, content: &str) -> Value {
    json!({
        "id": id.to_string(), "channel_id": "3", "content": content, "type": 0,
        "author": {"id": "7", "username": "bot", "discriminator": "0000", "avatar": null},
        "attachments": [], "embeds": [], "components": [], "mentions": [], "mention_roles": [],
        "mention_everyone": false, "pinned": false, "tts": false,
        "timestamp": "2024-01-01T00:00:00.000000+00:00", "edited_timestamp": null
    })
}

/// Runs `request` through a [`Call`], answered with `status` and `body`.
fn run<T>(request: RestRequest<T>, status: u16, body: &str) -> Result<Response<T>, RestError> {
    let rest = Rest::new(RestConfig::builder().token("bot-token").build().unwrap());
    let mut limiter = rest.rate_limiter();
    let mut call = rest.call(request);
    let Step::Send(_) = call.poll(at(0), &mut limiter) else {
        panic!("expected Send")
    };
    call.on_response(at(0), reply(status, &[], body), &mut limiter);
    match call.poll(at(0), &mut limiter) {
        Step::Done(result) => result,
        _ => panic!("expected Done"),
    }
}

#[test]
fn respond_returning_decodes_the_message() {
    let i = interaction();
    let request = i
        .respond_returning(MessageCreate::new().content("hello"))
        .unwrap();
    assert_eq!(
        request.route().path(),
        format!("/interactions/42/{ENCODED}/callback?with_response=true")
    );
    assert_eq!(
        request.route().rate_limit_key(),
        i.respond(Callback::deferred())
            .unwrap()
            .route()
            .rate_limit_key()
    );
    let answer = json!({
        "interaction": {"id": "42", "type": 2, "response_message_id": "99",
            "response_message_loading": false, "response_message_ephemeral": false},
        "resource": {"type": 4, "message": message_json(99, "hello")}
    });
    let response = run(request, 200, &answer.to_string()).unwrap();
    let model = response.model().unwrap();
    assert_eq!(model.interaction.id, Id::new(42));
    assert_eq!(model.interaction.response_message_id, Some(Id::new(99)));
    assert_eq!(model.message().unwrap().content, "hello");
    assert_eq!(model.into_message().unwrap().id, Id::new(99));
    // A modal creates no resource.
    let request = i.respond_returning(Callback::deferred_update()).unwrap();
    let answer = r#"{"interaction": {"id": "42", "type": 3}}"#;
    let model = run(request, 200, answer).unwrap().model().unwrap();
    assert!(model.message().is_none());
}

#[test]
fn typed_answers_decode() {
    let i = interaction();
    let body = message_json(5, "orig").to_string();
    let message = run(i.original(), 200, &body).unwrap().model().unwrap();
    assert_eq!(message.content, "orig");
    let deleted = run(i.delete_original(), 204, "").unwrap().model().unwrap();
    assert_eq!(deleted, NoContent);
}

#[test]
fn unknown_interaction_through_a_call() {
    let body = r#"{"message": "Unknown interaction", "code": 10062}"#;
    let error = run(interaction().defer(false), 404, body).unwrap_err();
    assert!(error.is_unknown_interaction());
    assert!(error.is_not_found());
    assert!(!error.is_already_acknowledged());
    assert_eq!(error.code(), Some(10062));
    assert_eq!(error.status(), Some(StatusCode::NOT_FOUND));
    assert!(!error.to_string().contains(ITOKEN));
    let body = r#"{"message": "Interaction has already been acknowledged.", "code": 40060}"#;
    let error = run(interaction().defer(false), 400, body).unwrap_err();
    assert!(error.is_already_acknowledged());
    assert!(error.http().unwrap().is_bad_request());
}

fn command(name: &str, id: Option<u64>) -> Command {
    #[allow(deprecated)]
    Command {
        application_id: Some(Id::new(7)),
        contexts: None,
        default_member_permissions: None,
        dm_permission: None,
        description: format!("{name} things"),
        description_localizations: None,
        guild_id: Some(Id::new(8)),
        id: id.map(Id::new),
        integration_types: None,
        kind: CommandType::ChatInput,
        name: name.to_owned(),
        name_localizations: None,
        nsfw: None,
        options: Vec::new(),
        version: Id::new(1),
    }
}

fn check_command_route<T>(request: &RestRequest<T>, method: Method, path: &str, template: &str) {
    let route = request.route();
    assert_eq!(route.method(), method);
    assert_eq!(route.path(), path);
    assert_eq!(route.key().template(), template);
    assert!(route.is_authenticated());
    assert!(route.is_global_limited());
    assert_eq!(route.major(), Major::None);
    let custom = Route::custom(method, path).unwrap();
    assert_eq!(route, &custom, "same rate-limit state as a raw request");
}

#[test]
fn global_command_routes() {
    let commands = Commands::global(Id::new(7));
    assert_eq!(commands.guild_id(), None);
    let all = "/applications/7/commands";
    let all_t = "/applications/{id}/commands";
    let one = "/applications/7/commands/3";
    let one_t = "/applications/{id}/commands/{id}";
    check_command_route(&commands.list(), Method::GET, all, all_t);
    check_command_route(&commands.get(Id::new(3)), Method::GET, one, one_t);
    check_command_route(&commands.delete(Id::new(3)), Method::DELETE, one, one_t);
    let create = commands.create(&command("ping", Some(3))).unwrap();
    check_command_route(&create, Method::POST, all, all_t);
    assert_eq!(
        json_of(&create),
        json!({"name": "ping", "description": "ping things", "type": 1,
            "default_member_permissions": null})
    );
    let edit = commands
        .edit(Id::new(3), &command("pong", Some(3)))
        .unwrap();
    check_command_route(&edit, Method::PATCH, one, one_t);
    assert_eq!(
        json_of(&edit),
        json!({"name": "pong", "description": "pong things", "options": [],
            "default_member_permissions": null})
    );
}

#[test]
fn guild_command_routes_and_bulk_overwrite() {
    let commands = Commands::guild(Id::new(7), Id::new(8));
    assert_eq!(commands.guild_id(), Some(Id::new(8)));
    let all = "/applications/7/guilds/8/commands";
    let all_t = "/applications/{id}/guilds/{id}/commands";
    let one = "/applications/7/guilds/8/commands/3";
    let one_t = "/applications/{id}/guilds/{id}/commands/{id}";
    check_command_route(&commands.list(), Method::GET, all, all_t);
    check_command_route(&commands.get(Id::new(3)), Method::GET, one, one_t);
    check_command_route(&commands.delete(Id::new(3)), Method::DELETE, one, one_t);
    let mut with_option = command("b", None);
    with_option.options = vec![CommandOption {
        autocomplete: None,
        channel_types: None,
        choices: None,
        description: "what".to_owned(),
        description_localizations: None,
        kind: CommandOptionType::String,
        max_length: None,
        max_value: None,
        min_length: None,
        min_value: None,
        name: "query".to_owned(),
        name_localizations: None,
        options: None,
        required: Some(true),
    }];
    let set = commands.set(&[command("a", Some(3)), with_option]).unwrap();
    check_command_route(&set, Method::PUT, all, all_t);
    let json = json_of(&set);
    assert_eq!(json[0]["id"], "3");
    assert_eq!(json[0]["name"], "a");
    assert!(json[0].get("version").is_none());
    assert!(json[0].get("application_id").is_none());
    assert!(json[0].get("guild_id").is_none());
    assert!(json[1].get("id").is_none());
    assert_eq!(json[1]["options"][0]["name"], "query");
    assert_eq!(json[1]["options"][0]["type"], 3);
    let answer = serde_json::to_string(&[command("a", Some(3))]).unwrap();
    let stored = run(set, 200, &answer).unwrap().model().unwrap();
    assert_eq!(stored[0].name, "a");
}

fn http_error(status: u16, body: &[u8]) -> HttpError {
    HttpError {
        route: Route::custom(Method::GET, "/x").unwrap().key().clone(),
        status: StatusCode::from_u16(status).unwrap(),
        headers: HeaderMap::new(),
        body: Bytes::copy_from_slice(body),
        discord: DiscordError::from_body(body),
    }
}

#[test]
fn status_predicates() {
    type Predicate = fn(&HttpError) -> bool;
    let cases: [(u16, Predicate); 5] = [
        (400, HttpError::is_bad_request),
        (401, HttpError::is_unauthorized),
        (403, HttpError::is_forbidden),
        (404, HttpError::is_not_found),
        (429, HttpError::is_rate_limited),
    ];
    for (status, predicate) in cases {
        let error = http_error(status, b"");
        assert!(predicate(&error), "{status}");
        assert_eq!(error.code(), None);
        assert_eq!(error.message(), None);
        assert!(error.field_errors().is_empty());
        for (other, predicate) in cases {
            assert_eq!(predicate(&error), other == status);
        }
    }
    let rest = RestError::Http(Box::new(http_error(403, b"")));
    assert!(rest.is_forbidden() && !rest.is_unauthorized() && !rest.is_not_found());
    let wrapped = RestError::RetriesExhausted {
        attempts: 3,
        last: Box::new(RestError::Http(Box::new(http_error(
            401,
            br#"{"code":0,"message":"401: Unauthorized"}"#,
        )))),
    };
    assert!(wrapped.is_unauthorized());
    assert_eq!(wrapped.code(), Some(0));
    assert_eq!(wrapped.status(), Some(StatusCode::UNAUTHORIZED));
    let too_long = RestError::RateLimitTooLong {
        wait: std::time::Duration::from_secs(900),
        route: Route::custom(Method::GET, "/x").unwrap().key().clone(),
        global: false,
    };
    assert!(too_long.is_rate_limited());
    assert_eq!(too_long.code(), None);
    assert_eq!(too_long.status(), None);
    assert!(RestError::Http(Box::new(http_error(429, b""))).is_rate_limited());
    assert!(!RestError::CallFinished.is_rate_limited());
}

#[test]
fn field_errors_list_paths() {
    let body = br#"{"code": 50035, "message": "Invalid Form Body", "errors": {
        "content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Too long."}]},
        "components": {"0": {"components": {"1": {"label": {"_errors": [
            {"code": "BASE_TYPE_REQUIRED", "message": "Required."},
            {"code": "OTHER", "message": "Also."}
        ]}}}}},
        "_errors": [{"code": "TOP", "message": "Top level."}]
    }}"#;
    let error = http_error(400, body);
    assert_eq!(error.code(), Some(DiscordError::INVALID_FORM_BODY));
    assert_eq!(error.message(), Some("Invalid Form Body"));
    assert!(error.discord.as_ref().unwrap().is(50035));
    let fields = error.field_errors();
    let listed: Vec<(&str, &str)> = fields
        .iter()
        .map(|field| (field.path.as_str(), field.code.as_str()))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("", "TOP"),
            ("components[0].components[1].label", "BASE_TYPE_REQUIRED"),
            ("components[0].components[1].label", "OTHER"),
            ("content", "BASE_TYPE_MAX_LENGTH"),
        ]
    );
    assert_eq!(
        fields[3].to_string(),
        "content: Too long. (BASE_TYPE_MAX_LENGTH)"
    );
    assert_eq!(fields[0].to_string(), "(body): Top level. (TOP)");
}

#[test]
fn malformed_error_bodies_do_not_panic() {
    let bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"<html>502 Bad Gateway</html>".to_vec(),
        b"{\"code\": 10062".to_vec(),
        br#"{"code": "10062", "message": "x"}"#.to_vec(),
        br#"{"code": -1, "message": "x"}"#.to_vec(),
        br#"{"message": "no code"}"#.to_vec(),
        br#"[1, 2, 3]"#.to_vec(),
        [b'['; 100_000].to_vec(),
        vec![0xff; 64],
    ];
    for body in bodies {
        let error = http_error(400, &body);
        assert!(error.discord.is_none());
        assert!(!error.is_unknown_interaction());
        let _ = error.to_string();
    }
    // Larger than 1 MiB: not decoded.
    let mut huge = br#"{"code": 10062, "message": ""#.to_vec();
    huge.extend(std::iter::repeat_n(b'a', 2 * 1024 * 1024));
    huge.extend(br#""}"#);
    assert!(http_error(404, &huge).discord.is_none());
    // Odd `errors` shapes are skipped.
    let odd = br#"{"code": 50035, "message": "m", "errors": {"a": [1], "b": {"_errors": "x"},
        "c": {"_errors": [1, {"code": 5}, {"message": "only"}]}, "": {"_errors": [{}]}}}"#;
    let fields = http_error(400, odd).field_errors();
    let listed: Vec<(&str, &str, &str)> = fields
        .iter()
        .map(|f| (f.path.as_str(), f.code.as_str(), f.message.as_str()))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("", "", ""),
            ("c", "", ""),
            ("c", "", ""),
            ("c", "", "only")
        ]
    );
    let not_object = http_error(400, br#"{"code": 1, "message": "m", "errors": [1]}"#);
    assert!(not_object.field_errors().is_empty());
}

#[test]
fn field_errors_are_bounded() {
    // Deeper than the walk goes.
    let mut deep = json!({"_errors": [{"code": "DEEP", "message": "deep"}]});
    for _ in 0..100 {
        deep = json!({ "x": deep });
    }
    let error = DiscordError {
        code: 50035,
        message: "m".to_owned(),
        errors: Some(deep),
    };
    assert!(error.field_errors().is_empty());
    // More leaves than listed.
    let many: serde_json::Map<String, Value> = (0..1000)
        .map(|n| {
            let leaf = json!({"_errors": [{"code": "C", "message": "M"}]});
            (format!("f{n}"), leaf)
        })
        .collect();
    let error = DiscordError {
        errors: Some(Value::Object(many)),
        ..error
    };
    assert_eq!(error.field_errors().len(), 256);
}

proptest! {
    #[test]
    fn error_decoding_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let error = http_error(400, &body);
        let _ = (error.field_errors(), error.to_string(), error.is_already_acknowledged());
    }

    #[test]
    fn error_trees_never_panic(keys in proptest::collection::vec("[a-z0-9_]{0,6}", 0..8)) {
        let mut tree = json!({"_errors": [{"code": "C", "message": "M"}]});
        for key in &keys {
            tree = json!({ key.clone(): tree });
        }
        let body = json!({"code": 50035, "message": "m", "errors": tree}).to_string();
        let fields = http_error(400, body.as_bytes()).field_errors();
        prop_assert!(fields.len() <= 1);
    }
}
