// The steps of a task on this server's tables: each method is defined in the file of its step.
#pragma once

#include "task.hpp"

namespace task {

class LocalSteps final : public Steps {
public:
    // task_shadow.cpp
    catch_up::Mode writes_mode(const control::Job &job, const control::Task &task) const override;
    void create_shadow(const control::Job &job, const control::Task &task,
                       const std::optional<catch_up::Key> &key) const override;
    // task_load.cpp
    void load_shadow(const control::Job &job, const control::Task &task,
                     const Pacing &pacing) const override;
    // task_indexes.cpp
    void build_indexes(const control::Job &job, const control::Task &task) const override;
    void add_foreign_keys(const control::Job &job, const control::Task &task) const override;
    void validate_foreign_keys(const control::Job &job, const control::Task &task) const override;
    // task_swap.cpp
    int64 catch_up_round(const control::Job &job, const control::Task &task,
                         const catch_up::Key &key) const override;
    void swap(const control::Job &job, const control::Task &task,
              const std::optional<catch_up::Key> &key) const override;
    // task_retire.cpp
    void retire_old(const control::Job &job, const control::Task &task,
                    double swap_lock_ms) const override;
    void finish_retire(const control::Job &job, const control::Task &task) const override;
    // task_rollback.cpp
    void drop_shadow(const control::Task &task) const override;
    void drop_write_triggers(const control::Task &task) const override;
    void prepare_roll_back(const control::Job &job, const control::Task &task) const override;
    void swap_back(const control::Job &job, const control::Task &task) const override;
    void drop_rolled_back(const control::Task &task) const override;
};

}  // namespace task
