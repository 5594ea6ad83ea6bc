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

/// Output to a closed pipe (`kbundle inspect B | head -1`) ends the program quietly with
/// status 0, as it would for `cat`; `println!` reports it by panicking, so the panic is
/// turned into that exit here. Any other panic keeps the default report.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

fn main() {
    quiet_on_broken_pipe();
    let cli = kbundle::cli::Cli::parse();
    let code = match kbundle::cli::run(cli) {
        Ok(code) => code,
        Err(e) if kbundle::cli::is_broken_pipe(&e) => 0,
        Err(e) => {
            eprintln!("error: {}", report(&e));
            kbundle::cli::EXIT_FAILURE
        }
    };
    std::process::exit(code);
}
