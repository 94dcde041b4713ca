//! `callkeeper crm user add|list|remove`: who may sign in to the CRM. The password is read from
//! standard input (without echo at a terminal), hashed with Argon2id, and only the hash is kept.

use callkeeper_core::store::UsersPort;
use callkeeper_core::time::{format_ms, now_ms};
use callkeeper_core::users::{hash_password, User, UserName};
use std::io::{BufRead, IsTerminal, Write};

/// What `add` did, or why it did nothing.
pub enum Added {
    Done(String),
    Refused(String),
}

pub async fn add(store: &dyn UsersPort, name: &UserName, replace: bool) -> anyhow::Result<Added> {
    let password = read_password(&format!("password for {name}: "))?;
    let hash = match hash_password(&password) {
        Ok(hash) => hash,
        Err(e) => return Ok(Added::Refused(e.to_string())),
    };
    let at = now_ms();
    if replace {
        return Ok(if store.set_password(name, &hash, at).await? {
            Added::Done(format!("password of {name} replaced\n"))
        } else {
            Added::Refused(format!("no user {name} (add it without --replace)"))
        });
    }
    let user = User { name: name.clone(), password_hash: hash, created_at: at, updated_at: at, session_epoch: 0 };
    Ok(if store.add_user(&user).await? {
        Added::Done(format!("user {name} added\n"))
    } else {
        Added::Refused(format!("user {name} exists (--replace sets a new password)"))
    })
}

pub async fn list(store: &dyn UsersPort, as_json: bool) -> anyhow::Result<String> {
    let users = store.users().await?;
    if as_json {
        return Ok(serde_json::to_string_pretty(&users)? + "\n");
    }
    if users.is_empty() {
        return Ok("no users yet: callkeeper crm user add NAME\n".into());
    }
    let mut out = format!("{:<40}  {:<24}  {}\n", "NAME", "ADDED", "PASSWORD SET");
    for u in users {
        out += &format!("{:<40}  {:<24}  {}\n", u.name.as_str(), format_ms(u.created_at), format_ms(u.updated_at));
    }
    Ok(out)
}

/// One line from standard input; at a terminal, asked for on stderr and not echoed.
fn read_password(prompt: &str) -> anyhow::Result<String> {
    let terminal = std::io::stdin().is_terminal();
    if terminal {
        eprint!("{prompt}");
        std::io::stderr().flush()?;
        echo(false);
    }
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if terminal {
        echo(true);
        eprintln!();
    }
    read?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

#[cfg(unix)]
fn echo(on: bool) {
    let _ = std::process::Command::new("stty").arg(if on { "echo" } else { "-echo" }).stdin(std::process::Stdio::inherit()).status();
}

#[cfg(not(unix))]
fn echo(_on: bool) {}
