use clap::Parser;

fn main() {
    let cli = kbundle::cli::Cli::parse();
    let code = match kbundle::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            kbundle::cli::EXIT_FAILURE
        }
    };
    std::process::exit(code);
}
