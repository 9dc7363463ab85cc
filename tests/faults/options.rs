//! The child's command line: `--sqlite PATH` or `--postgres URL --prefix P`,
//! the read side elsewhere with `--read-sqlite PATH` or `--read-postgres
//! URL` (which also runs the ledger's table projection), `--tasks N`,
//! `--impatient N --deadline-us D`, `--seconds S`, `--drain`, `--probe ID`
//! (repeatable).

#[derive(Debug, Default, Clone)]
pub struct Options {
    pub sqlite: Option<String>,
    pub postgres: Option<String>,
    pub prefix: String,
    /// The read side in a SQLite file of its own.
    pub read_sqlite: Option<String>,
    /// The read side in a PostgreSQL database of its own.
    pub read_postgres: Option<String>,
    pub tasks: usize,
    pub impatient: usize,
    pub deadline_us: u64,
    pub seconds: f64,
    pub drain: bool,
    pub probes: Vec<String>,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = Options {
            prefix: "cqrs_".to_owned(),
            tasks: 4,
            seconds: 3600.0,
            ..Options::default()
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            if flag == "--drain" {
                options.drain = true;
                continue;
            }
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let number = || {
                value
                    .parse::<f64>()
                    .map_err(|_| format!("{flag} {value}: not a number"))
            };
            match flag.as_str() {
                "--sqlite" => options.sqlite = Some(value.clone()),
                "--postgres" => options.postgres = Some(value.clone()),
                "--prefix" => options.prefix = value.clone(),
                "--read-sqlite" => options.read_sqlite = Some(value.clone()),
                "--read-postgres" => options.read_postgres = Some(value.clone()),
                "--tasks" => options.tasks = number()? as usize,
                "--impatient" => options.impatient = number()? as usize,
                "--deadline-us" => options.deadline_us = number()? as u64,
                "--seconds" => options.seconds = number()?,
                "--probe" => options.probes.push(value.clone()),
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        if options.sqlite.is_none() == options.postgres.is_none() {
            return Err("give --sqlite or --postgres".to_owned());
        }
        Ok(options)
    }

    /// The arguments that make these options again.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(path) = &self.sqlite {
            args.extend(["--sqlite".to_owned(), path.clone()]);
        }
        if let Some(url) = &self.postgres {
            args.extend([
                "--postgres".to_owned(),
                url.clone(),
                "--prefix".to_owned(),
                self.prefix.clone(),
            ]);
        }
        if let Some(path) = &self.read_sqlite {
            args.extend(["--read-sqlite".to_owned(), path.clone()]);
        }
        if let Some(url) = &self.read_postgres {
            args.extend(["--read-postgres".to_owned(), url.clone()]);
        }
        args.extend(["--tasks".to_owned(), self.tasks.to_string()]);
        args.extend(["--impatient".to_owned(), self.impatient.to_string()]);
        args.extend(["--deadline-us".to_owned(), self.deadline_us.to_string()]);
        args.extend(["--seconds".to_owned(), self.seconds.to_string()]);
        if self.drain {
            args.push("--drain".to_owned());
        }
        for probe in &self.probes {
            args.extend(["--probe".to_owned(), probe.clone()]);
        }
        args
    }
}

impl Options {
    /// Whether the read side is in a database of its own.
    pub fn read_elsewhere(&self) -> bool {
        self.read_sqlite.is_some() || self.read_postgres.is_some()
    }
}
