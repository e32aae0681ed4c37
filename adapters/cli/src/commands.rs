//! `yuyo commands sync|list`: deploys application commands from a JSON file (checked
//! against Discord's rules first; nothing is sent when Discord already has them) and
//! lists the deployed ones. The decisions are core's ([`parse_commands`],
//! [`Commands::plan_sync`] through [`RestClient::sync_commands`]).

use std::process::ExitCode;

use yuyo_blocking::prelude::twilight_model::application::command::CommandType;
use yuyo_blocking::prelude::twilight_model::id::Id;
use yuyo_blocking::prelude::*;
use yuyo_core::rest::{CommandProblem, SyncOutcome, parse_commands};

use crate::{CommandsListArgs, CommandsSyncArgs, DiscordArgs, discord};

/// The commands of the application, global or in `--guild`.
fn scope(client: &RestClient, args: &DiscordArgs, guild: Option<u64>) -> Result<Commands, String> {
    let application = Id::new_checked(discord::application_id(client, args)?)
        .ok_or("Discord answered application id 0")?;
    Ok(match guild.and_then(Id::new_checked) {
        Some(guild) => Commands::guild(application, guild),
        None => Commands::global(application),
    })
}

fn where_(guild: Option<u64>) -> String {
    guild.map_or_else(|| "global".to_owned(), |id| format!("guild {id}"))
}

/// Runs `yuyo commands sync FILE`.
pub fn sync(args: &CommandsSyncArgs) -> Result<ExitCode, String> {
    let file = args.file.display().to_string();
    let json = std::fs::read(&args.file).map_err(|e| format!("cannot read {file}: {e}"))?;
    let desired = parse_commands(&json).map_err(|problems| describe(&file, &problems))?;
    println!("{file}: {} commands, valid", desired.len());
    if args.guild == Some(0) {
        return Err("--guild 0 is not a guild id".to_owned());
    }
    let client = discord::client(&args.discord)?;
    let commands = scope(&client, &args.discord, args.guild)?;
    let outcome = client
        .sync_commands(commands, desired)
        .map_err(|e| discord::explain(&e, &args.discord, &[]))?;
    match outcome {
        SyncOutcome::UpToDate => println!(
            "up to date: Discord's {} commands are already these; nothing sent",
            where_(args.guild)
        ),
        SyncOutcome::Overwritten { changes, stored } => {
            for change in &changes {
                println!("{change}");
            }
            println!(
                "synced: {} {} commands now deployed",
                stored.len(),
                where_(args.guild)
            );
            if args.guild.is_none() {
                println!("note: global commands can take a moment to appear in clients");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Every problem, one a line, each prefixed with the file.
fn describe(file: &str, problems: &[CommandProblem]) -> String {
    let lines: Vec<String> = problems.iter().map(|p| format!("{file}: {p}")).collect();
    format!(
        "{}\n(nothing was sent to Discord; fix the file and run again)",
        lines.join("\n")
    )
}

/// Runs `yuyo commands list`.
pub fn list(args: &CommandsListArgs) -> Result<ExitCode, String> {
    if args.guild == Some(0) {
        return Err("--guild 0 is not a guild id".to_owned());
    }
    let client = discord::client(&args.discord)?;
    let commands = scope(&client, &args.discord, args.guild)?;
    let listed = client
        .call(commands.list())
        .and_then(|response| response.model())
        .map_err(|e| discord::explain(&e, &args.discord, &[]))?;
    println!("{} {} commands", listed.len(), where_(args.guild));
    for command in &listed {
        let kind = match command.kind {
            CommandType::ChatInput => "/",
            CommandType::User => "user: ",
            CommandType::Message => "message: ",
            _ => "?: ",
        };
        let id = command
            .id
            .map_or_else(String::new, |id| format!("  (id {id})"));
        println!("{kind}{}  {}{id}", command.name, command.description);
    }
    Ok(ExitCode::SUCCESS)
}
