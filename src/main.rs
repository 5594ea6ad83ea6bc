use clap::Parser;

/// `error: <message>` plus each underlying cause the message does not already spell out.
fn report(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg.push_str(": ");
            msg.push_str(&t);
        }
        source = s.source();
    }
    msg
}

fn main() {
    let cli = kbundle::cli::Cli::parse();
    let code = match kbundle::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", report(&e));
            kbundle::cli::EXIT_FAILURE
        }
    };
    std::process::exit(code);
}
