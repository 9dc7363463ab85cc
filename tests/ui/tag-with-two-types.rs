use cqrs_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CourseOpened {
    pub course_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CourseClosed {
    pub course_id: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
pub enum CourseEvent {
    #[event(tags(course_id))]
    Opened(CourseOpened),
    #[event(tags(course_id))]
    Closed(CourseClosed),
}

#[derive(Debug, Clone)]
pub struct OpenCourse;

#[derive(Debug, thiserror::Error)]
#[error("closed")]
pub struct Closed;

#[derive(Debug, Clone, Default, DecisionModel)]
#[decision(name = "course", command = OpenCourse, event = CourseEvent, error = Closed)]
pub struct Course {
    #[tag]
    course_id: String,
}

#[decision_impl]
impl Course {
    #[command_handler]
    fn open(&self, _: OpenCourse) -> Result<(), Closed> {
        Ok(())
    }

    #[apply]
    fn opened(&mut self, _: &CourseOpened) {}

    #[apply]
    fn closed(&mut self, _: &CourseClosed) {}
}

fn main() {}
