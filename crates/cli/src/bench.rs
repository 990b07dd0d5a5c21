//! bench
use clap::Subcommand;
#[derive(Subcommand)]
pub enum BenchCommand {
    Engine,
}
pub async fn run(_: &crate::settings::Common, _: BenchCommand) -> anyhow::Result<()> {
    Ok(())
}
