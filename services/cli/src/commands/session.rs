//! `voidrunner login` and `logout`: a session kept for the server, so that the other client
//! commands need no API key.

use std::io::{BufRead, IsTerminal, Write};

use crate::client::{Client, ClientError};

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The account's email (asked for when left out).
    #[arg(long)]
    pub email: Option<String>,
    /// Read the password from the first line of stdin instead of asking for it.
    #[arg(long)]
    pub password_stdin: bool,
}

fn read_line(prompt: &str) -> Result<String, ClientError> {
    if std::io::stdin().is_terminal() {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|error| ClientError::Other(format!("reading stdin: {error}")))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

pub async fn login(client: &Client, args: LoginArgs) -> Result<u8, ClientError> {
    let email = match args.email {
        Some(email) => email,
        None => read_line("email: ")?,
    };
    let password = if args.password_stdin || !std::io::stdin().is_terminal() {
        read_line("")?
    } else {
        rpassword::prompt_password("password: ")
            .map_err(|error| ClientError::Other(format!("reading the password: {error}")))?
    };
    if email.trim().is_empty() || password.is_empty() {
        return Err(ClientError::Other(
            "an email and a password are needed (--email, --password-stdin)".into(),
        ));
    }
    client.login(email.trim(), &password).await?;
    eprintln!(
        "voidrunner: logged in to {} as {}",
        client.server(),
        email.trim()
    );
    Ok(0)
}

pub async fn logout(client: &Client) -> Result<u8, ClientError> {
    if client.logout().await? {
        eprintln!("voidrunner: logged out of {}", client.server());
    } else {
        eprintln!("voidrunner: not logged in to {}", client.server());
    }
    Ok(0)
}
